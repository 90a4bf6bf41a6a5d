//! `headscale.v1.HeadscaleService`: each RPC runs the same function as its `/api/v1` route
//! (`api::users`, `api::keys`, `api::nodes`, `api::history`), so rules, messages and
//! answers cannot drift apart; this file only moves fields between the proto messages and
//! those functions. Errors are the API's, as a gRPC status with the same code and message.

use super::convert;
use super::proto::headscale_service_server::HeadscaleService;
use super::proto::*;
use crate::api::{self, ApiContext, ApiError};
use crate::core::ids::{ApiKeyId, NodeId, PreAuthKeyId, UserId};
use crate::core::{Actor, Command};
use tonic::{Request, Response, Status};

/// The service over the API's context. Who calls is in each request's extensions: the
/// socket marks requests `Actor::LocalSocket`, `grpc_listen_addr` the API key's actor.
#[derive(Clone)]
pub struct Service {
    ctx: ApiContext,
}

impl Service {
    pub fn new(ctx: ApiContext) -> Service {
        Service { ctx }
    }

    /// The generated tonic server of this service.
    pub fn server(ctx: ApiContext) -> headscale_service_server::HeadscaleServiceServer<Service> {
        headscale_service_server::HeadscaleServiceServer::new(Service::new(ctx))
            .max_decoding_message_size(api::MAX_REQUEST_BODY_BYTES)
    }
}

impl Service {
    /// Expire or delete an API key named by id (0: none) or prefix (empty: none).
    async fn api_key_command(
        &self,
        actor: Actor,
        id: u64,
        prefix: &str,
        command: fn(ApiKeyId) -> Command,
    ) -> Result<(), Status> {
        let id = given(id).map(|id| id.to_string());
        api::keys::api_key_command(&self.ctx, actor, id.as_deref(), text(prefix), command)
            .await
            .map_err(status)
    }
}

/// An API error as a gRPC status: the same code and message REST gives.
pub fn status(error: ApiError) -> Status {
    let (code, message) = error.code_and_message();
    Status::new(tonic::Code::from_i32(code), message)
}

/// The caller recorded by the listener; a request without one is refused (it cannot happen
/// through our listeners, which always set it).
fn actor<T>(request: &Request<T>) -> Result<Actor, Status> {
    request
        .extensions()
        .get::<Actor>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

/// An optional numeric id: 0 is "not given", as proto3 has no absent scalars.
fn given(id: u64) -> Option<u64> {
    (id != 0).then_some(id)
}

/// An optional string: empty is "not given".
fn text(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl HeadscaleService for Service {
    async fn create_user(&self, request: Request<CreateUserRequest>) -> Answer<CreateUserResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let body = api::users::CreateBody {
            name: r.name,
            display_name: r.display_name,
            email: r.email,
            picture_url: r.picture_url,
        };
        let user = api::users::create_user(&self.ctx, actor, body)
            .await
            .map_err(status)?;
        Ok(Response::new(CreateUserResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn rename_user(&self, request: Request<RenameUserRequest>) -> Answer<RenameUserResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let user = api::users::rename_user(&self.ctx, actor, UserId(r.old_id), r.new_name)
            .await
            .map_err(status)?;
        Ok(Response::new(RenameUserResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn delete_user(&self, request: Request<DeleteUserRequest>) -> Answer<DeleteUserResponse> {
        let actor = actor(&request)?;
        let id = UserId(request.into_inner().id);
        api::users::delete_user(&self.ctx, actor, id, false)
            .await
            .map_err(status)?;
        Ok(Response::new(DeleteUserResponse {}))
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Answer<ListUsersResponse> {
        let r = request.into_inner();
        let users =
            api::users::list_users(&self.ctx, None, given(r.id), text(&r.name), text(&r.email))
                .map_err(status)?;
        Ok(Response::new(ListUsersResponse {
            users: users.into_iter().map(convert::user).collect(),
        }))
    }

    async fn create_pre_auth_key(
        &self,
        request: Request<CreatePreAuthKeyRequest>,
    ) -> Answer<CreatePreAuthKeyResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let body = api::keys::CreatePreAuthBody {
            user: given(r.user).map(|id| id.to_string()),
            reusable: r.reusable,
            ephemeral: r.ephemeral,
            pre_approved: false,
            expiration: r.expiration.as_ref().map(convert::rfc3339),
            acl_tags: r.acl_tags,
        };
        let key = api::keys::create_pre_auth_key(&self.ctx, actor, body)
            .await
            .map_err(status)?;
        Ok(Response::new(CreatePreAuthKeyResponse {
            pre_auth_key: Some(convert::pre_auth_key(key)),
        }))
    }

    async fn expire_pre_auth_key(
        &self,
        request: Request<ExpirePreAuthKeyRequest>,
    ) -> Answer<ExpirePreAuthKeyResponse> {
        let actor = actor(&request)?;
        let id = given(request.into_inner().id).map(PreAuthKeyId);
        api::keys::pre_auth_key_command(&self.ctx, actor, id, |id| Command::ExpirePreAuthKey {
            id,
        })
        .await
        .map_err(status)?;
        Ok(Response::new(ExpirePreAuthKeyResponse {}))
    }

    async fn delete_pre_auth_key(
        &self,
        request: Request<DeletePreAuthKeyRequest>,
    ) -> Answer<DeletePreAuthKeyResponse> {
        let actor = actor(&request)?;
        let id = given(request.into_inner().id).map(PreAuthKeyId);
        api::keys::pre_auth_key_command(&self.ctx, actor, id, |id| Command::DeletePreAuthKey {
            id,
        })
        .await
        .map_err(status)?;
        Ok(Response::new(DeletePreAuthKeyResponse {}))
    }

    async fn list_pre_auth_keys(
        &self,
        _request: Request<ListPreAuthKeysRequest>,
    ) -> Answer<ListPreAuthKeysResponse> {
        let keys = api::keys::list_pre_auth_keys(&self.ctx, None, None).map_err(status)?;
        Ok(Response::new(ListPreAuthKeysResponse {
            pre_auth_keys: keys.into_iter().map(convert::pre_auth_key).collect(),
        }))
    }

    async fn debug_create_node(
        &self,
        request: Request<DebugCreateNodeRequest>,
    ) -> Answer<DebugCreateNodeResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let body = api::nodes::DebugNodeBody {
            user: r.user,
            key: text(&r.key).map(str::to_string),
            name: r.name,
            routes: r.routes,
        };
        let node = api::nodes::debug_create_node(&self.ctx, actor, body)
            .await
            .map_err(status)?;
        Ok(Response::new(DebugCreateNodeResponse {
            node: Some(convert::node(node)),
        }))
    }

    async fn get_node(&self, request: Request<GetNodeRequest>) -> Answer<GetNodeResponse> {
        let id = NodeId(request.into_inner().node_id);
        let node = api::nodes::node_wire(&self.ctx, id).map_err(status)?;
        Ok(Response::new(GetNodeResponse {
            node: Some(convert::node(node)),
        }))
    }

    async fn set_tags(&self, request: Request<SetTagsRequest>) -> Answer<SetTagsResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let node = api::nodes::set_node_tags(&self.ctx, actor, NodeId(r.node_id), r.tags)
            .await
            .map_err(status)?;
        Ok(Response::new(SetTagsResponse {
            node: Some(convert::node(node)),
        }))
    }

    async fn set_approved_routes(
        &self,
        request: Request<SetApprovedRoutesRequest>,
    ) -> Answer<SetApprovedRoutesResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let node = api::nodes::approve_node_routes(&self.ctx, actor, NodeId(r.node_id), &r.routes)
            .await
            .map_err(status)?;
        Ok(Response::new(SetApprovedRoutesResponse {
            node: Some(convert::node(node)),
        }))
    }

    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Answer<RegisterNodeResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let node = api::nodes::complete_login(&self.ctx, actor, &r.key, Some(&r.user))
            .await
            .map_err(status)?;
        Ok(Response::new(RegisterNodeResponse {
            node: Some(convert::node(node)),
        }))
    }

    async fn delete_node(&self, request: Request<DeleteNodeRequest>) -> Answer<DeleteNodeResponse> {
        let actor = actor(&request)?;
        let id = NodeId(request.into_inner().node_id);
        api::nodes::delete_node(&self.ctx, actor, id)
            .await
            .map_err(status)?;
        Ok(Response::new(DeleteNodeResponse {}))
    }

    async fn expire_node(&self, request: Request<ExpireNodeRequest>) -> Answer<ExpireNodeResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let expiry = r.expiry.as_ref().map(convert::rfc3339);
        let node = api::nodes::expire_node(
            &self.ctx,
            actor,
            NodeId(r.node_id),
            expiry,
            r.disable_expiry,
        )
        .await
        .map_err(status)?;
        Ok(Response::new(ExpireNodeResponse {
            node: Some(convert::node(node)),
        }))
    }

    async fn rename_node(&self, request: Request<RenameNodeRequest>) -> Answer<RenameNodeResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let node = api::nodes::rename_node(&self.ctx, actor, NodeId(r.node_id), r.new_name)
            .await
            .map_err(status)?;
        Ok(Response::new(RenameNodeResponse {
            node: Some(convert::node(node)),
        }))
    }

    async fn list_nodes(&self, request: Request<ListNodesRequest>) -> Answer<ListNodesResponse> {
        let r = request.into_inner();
        let nodes = api::nodes::list_nodes(&self.ctx, None, text(&r.user)).map_err(status)?;
        Ok(Response::new(ListNodesResponse {
            nodes: nodes.into_iter().map(convert::node).collect(),
        }))
    }

    async fn backfill_node_i_ps(
        &self,
        request: Request<BackfillNodeIPsRequest>,
    ) -> Answer<BackfillNodeIPsResponse> {
        let changes =
            api::nodes::backfill_node_ips(request.into_inner().confirmed).map_err(status)?;
        Ok(Response::new(BackfillNodeIPsResponse { changes }))
    }

    async fn auth_register(
        &self,
        request: Request<AuthRegisterRequest>,
    ) -> Answer<AuthRegisterResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let node = api::nodes::auth_register_login(&self.ctx, actor, &r.auth_id, Some(&r.user))
            .await
            .map_err(status)?;
        Ok(Response::new(AuthRegisterResponse {
            node: Some(convert::node(node)),
        }))
    }

    async fn auth_approve(
        &self,
        request: Request<AuthApproveRequest>,
    ) -> Answer<AuthApproveResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        api::nodes::auth_approve_login(&self.ctx, actor, &r.auth_id, None)
            .await
            .map_err(status)?;
        Ok(Response::new(AuthApproveResponse {}))
    }

    async fn auth_reject(&self, request: Request<AuthRejectRequest>) -> Answer<AuthRejectResponse> {
        actor(&request)?;
        api::nodes::auth_reject_login(&self.ctx, &request.into_inner().auth_id)
            .await
            .map_err(status)?;
        Ok(Response::new(AuthRejectResponse {}))
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Answer<CreateApiKeyResponse> {
        let actor = actor(&request)?;
        let expiration = request
            .into_inner()
            .expiration
            .as_ref()
            .map(convert::rfc3339);
        let api_key = api::keys::create_api_key(&self.ctx, actor, expiration.as_deref())
            .await
            .map_err(status)?;
        Ok(Response::new(CreateApiKeyResponse { api_key }))
    }

    async fn expire_api_key(
        &self,
        request: Request<ExpireApiKeyRequest>,
    ) -> Answer<ExpireApiKeyResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        self.api_key_command(actor, r.id, &r.prefix, |id| Command::ExpireApiKey { id })
            .await?;
        Ok(Response::new(ExpireApiKeyResponse {}))
    }

    async fn list_api_keys(
        &self,
        _request: Request<ListApiKeysRequest>,
    ) -> Answer<ListApiKeysResponse> {
        let keys = api::keys::list_api_keys(&self.ctx, None).map_err(status)?;
        Ok(Response::new(ListApiKeysResponse {
            api_keys: keys.into_iter().map(convert::api_key).collect(),
        }))
    }

    async fn delete_api_key(
        &self,
        request: Request<DeleteApiKeyRequest>,
    ) -> Answer<DeleteApiKeyResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        self.api_key_command(actor, r.id, &r.prefix, |id| Command::DeleteApiKey { id })
            .await?;
        Ok(Response::new(DeleteApiKeyResponse {}))
    }

    async fn get_policy(&self, _request: Request<GetPolicyRequest>) -> Answer<GetPolicyResponse> {
        let (policy, updated_at) =
            api::history::policy_in_force(&self.ctx, None).map_err(status)?;
        Ok(Response::new(GetPolicyResponse {
            policy,
            updated_at: Some(convert::timestamp(updated_at)),
        }))
    }

    async fn set_policy(&self, request: Request<SetPolicyRequest>) -> Answer<SetPolicyResponse> {
        let actor = actor(&request)?;
        let text = request.into_inner().policy;
        api::history::replace_policy(&self.ctx, actor, text)
            .await
            .map_err(status)?;
        let (policy, updated_at) =
            api::history::policy_in_force(&self.ctx, None).map_err(status)?;
        Ok(Response::new(SetPolicyResponse {
            policy,
            updated_at: Some(convert::timestamp(updated_at)),
        }))
    }

    async fn check_policy(
        &self,
        request: Request<CheckPolicyRequest>,
    ) -> Answer<CheckPolicyResponse> {
        api::history::check_policy_text(&self.ctx, &request.into_inner().policy).map_err(status)?;
        Ok(Response::new(CheckPolicyResponse {}))
    }

    async fn health(&self, _request: Request<HealthRequest>) -> Answer<HealthResponse> {
        Ok(Response::new(HealthResponse {
            database_connectivity: api::database_connectivity(&self.ctx),
        }))
    }
}
