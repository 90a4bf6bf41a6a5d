//! The API's wire shapes (`api::wire`, headscale's protojson) as the proto messages. The
//! REST answer is the JSON form of these same messages, so building the proto from it keeps
//! both APIs saying exactly the same thing: ids are decimal strings there, times RFC 3339.

use super::proto;
use crate::api::wire::{ApiKeyWire, NodeWire, PreAuthKeyWire, UserWire};
use crate::core::Timestamp;

/// A decimal id from the wire (always ours, so never malformed; 0 if it were).
fn id(text: &str) -> u64 {
    text.parse().unwrap_or(0)
}

/// An RFC 3339 time from the wire as a protobuf timestamp.
pub fn time(text: &str) -> Option<prost_types::Timestamp> {
    Timestamp::parse_rfc3339(text).map(timestamp)
}

pub fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    let ms = at.unix_ms();
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A protobuf timestamp as RFC 3339, the form the API's shared code reads.
pub fn rfc3339(at: &prost_types::Timestamp) -> String {
    let ms = at
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(at.nanos) / 1_000_000);
    Timestamp::from_unix_ms(ms).to_rfc3339()
}

pub fn user(user: UserWire) -> proto::User {
    proto::User {
        id: id(&user.id),
        created_at: time(&user.created_at),
        name: user.name,
        display_name: user.display_name,
        email: user.email,
        provider_id: user.provider_id,
        provider: user.provider,
        profile_pic_url: user.profile_pic_url,
    }
}

pub fn pre_auth_key(key: PreAuthKeyWire) -> proto::PreAuthKey {
    proto::PreAuthKey {
        user: key.user.map(user),
        id: id(&key.id),
        key: key.key,
        reusable: key.reusable,
        ephemeral: key.ephemeral,
        used: key.used,
        expiration: time(&key.expiration),
        created_at: time(&key.created_at),
        acl_tags: key.acl_tags,
    }
}

pub fn api_key(key: ApiKeyWire) -> proto::ApiKey {
    proto::ApiKey {
        id: id(&key.id),
        prefix: key.prefix,
        expiration: time(&key.expiration),
        created_at: time(&key.created_at),
        last_seen: key.last_seen.as_deref().and_then(time),
    }
}

fn register_method(text: &str) -> proto::RegisterMethod {
    proto::RegisterMethod::from_str_name(text).unwrap_or(proto::RegisterMethod::Unspecified)
}

pub fn node(node: NodeWire) -> proto::Node {
    proto::Node {
        id: id(&node.id),
        machine_key: node.machine_key,
        node_key: node.node_key,
        disco_key: node.disco_key,
        ip_addresses: node.ip_addresses,
        name: node.name,
        user: node.user.map(user),
        last_seen: node.last_seen.as_deref().and_then(time),
        expiry: node.expiry.as_deref().and_then(time),
        pre_auth_key: node.pre_auth_key.map(pre_auth_key),
        created_at: time(&node.created_at),
        register_method: register_method(&node.register_method).into(),
        given_name: node.given_name,
        online: node.online,
        approved_routes: node.approved_routes,
        available_routes: node.available_routes,
        subnet_routes: node.subnet_routes,
        tags: node.tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_rfc3339_and_keep_milliseconds() {
        let at = Timestamp::from_unix_ms(1_796_570_424_259);
        let proto = timestamp(at);
        assert_eq!(proto.seconds, 1_796_570_424);
        assert_eq!(proto.nanos, 259_000_000);
        assert_eq!(time(&at.to_rfc3339()), Some(proto));
        assert_eq!(rfc3339(&proto), at.to_rfc3339());
    }

    #[test]
    fn times_before_1970_are_not_negative_nanos() {
        let proto = timestamp(Timestamp::from_unix_ms(-1));
        assert_eq!((proto.seconds, proto.nanos), (-1, 999_000_000));
    }

    #[test]
    fn register_methods_map_to_the_enum() {
        assert_eq!(
            register_method("REGISTER_METHOD_CLI"),
            proto::RegisterMethod::Cli
        );
        assert_eq!(register_method("?"), proto::RegisterMethod::Unspecified);
    }
}
