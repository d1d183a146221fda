//! CRI ImageService: each RPC is traced and delegates to [`crate::images`].

use std::pin::Pin;
use std::sync::Arc;

use proto::cri::image_service_server::ImageService;
use proto::cri::*;
use tonic::{Request, Response, Status};

use crate::daemon::Daemon;
use crate::images;
use crate::rpc::{not_built, traced};

#[derive(Clone)]
pub struct ImageApi {
    daemon: Arc<Daemon>,
}

impl ImageApi {
    pub fn new(daemon: Arc<Daemon>) -> ImageApi {
        ImageApi { daemon }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> RpcResult<ListImagesResponse> {
        let daemon = &self.daemon;
        traced("ListImages", request, |r| images::list(daemon, r)).await
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> RpcResult<ImageStatusResponse> {
        let daemon = &self.daemon;
        traced("ImageStatus", request, |r| images::status(daemon, r)).await
    }

    async fn pull_image(&self, request: Request<PullImageRequest>) -> RpcResult<PullImageResponse> {
        let daemon = &self.daemon;
        traced("PullImage", request, |r| images::pull(daemon, r)).await
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> RpcResult<RemoveImageResponse> {
        let daemon = &self.daemon;
        traced("RemoveImage", request, |r| images::remove(daemon, r)).await
    }

    async fn image_fs_info(
        &self,
        request: Request<ImageFsInfoRequest>,
    ) -> RpcResult<ImageFsInfoResponse> {
        let daemon = &self.daemon;
        traced("ImageFsInfo", request, |r| images::fs_info(daemon, r)).await
    }

    type StreamImagesStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<StreamImagesResponse, Status>> + Send>>;

    /// ListImages in pieces (1.36); kubelet falls back on ListImages.
    async fn stream_images(
        &self,
        request: Request<StreamImagesRequest>,
    ) -> RpcResult<Self::StreamImagesStream> {
        traced("StreamImages", request, |_| not_built("StreamImages")).await
    }
}
