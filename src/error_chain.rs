//! An error and its causes on one line (`outer: cause: root cause`), each text once: hyper's
//! and rustls' own messages are often just "client error" with the reason two sources down,
//! and some wrappers repeat their source's text. For the one-line errors of our outbound
//! requests (the remote CLI, DERP map fetches, ACME, the OpenID provider).

pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}
