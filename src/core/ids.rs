//! Identifiers of the things the tailnet is made of. Ids are allocated by `decide` from
//! counters in the state (never reused after deletion, like SQL autoincrement), so replay
//! allocates exactly the same ids.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A user (a person or a namespace of nodes).
    UserId
);
id_type!(
    /// A node (one machine's registration in the tailnet).
    NodeId
);
id_type!(
    /// A pre-auth key.
    PreAuthKeyId
);
id_type!(
    /// An admin API key.
    ApiKeyId
);
