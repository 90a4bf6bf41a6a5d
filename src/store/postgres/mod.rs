//! The pieces of the PostgreSQL store (`super::postgres_store`): reaching the server
//! (`connect`) and our own tables in it (`schema`).

pub mod connect;
pub mod schema;

/// A PostgreSQL error on one line: the server's message (with its SQLSTATE) when it sent
/// one, else the client's error and its causes.
pub fn error_text(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
