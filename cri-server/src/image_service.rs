//! CRI ImageService.

use std::sync::Arc;

use proto::cri::image_service_server::ImageService;
use proto::cri::*;
use tonic::{Request, Response, Status};

use crate::daemon::Daemon;
use crate::rpc::{not_built, traced};

#[derive(Clone)]
pub struct ImageApi {
    _daemon: Arc<Daemon>,
}

impl ImageApi {
    pub fn new(daemon: Arc<Daemon>) -> ImageApi {
        ImageApi { _daemon: daemon }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> RpcResult<ListImagesResponse> {
        traced("ListImages", request, |_| not_built("ListImages")).await
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> RpcResult<ImageStatusResponse> {
        traced("ImageStatus", request, |_| not_built("ImageStatus")).await
    }

    async fn pull_image(&self, request: Request<PullImageRequest>) -> RpcResult<PullImageResponse> {
        traced("PullImage", request, |_| not_built("PullImage")).await
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> RpcResult<RemoveImageResponse> {
        traced("RemoveImage", request, |_| not_built("RemoveImage")).await
    }

    async fn image_fs_info(
        &self,
        request: Request<ImageFsInfoRequest>,
    ) -> RpcResult<ImageFsInfoResponse> {
        traced("ImageFsInfo", request, |_| not_built("ImageFsInfo")).await
    }
}
