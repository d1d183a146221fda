//! CRI ImageService: each RPC is traced, validated and translated here, and
//! delegates to the image controller ([`crate::images`]).

use std::pin::Pin;
use std::sync::Arc;

use image::Credentials;
use proto::cri::image_service_server::ImageService;
use proto::cri::*;
use tonic::{Request, Response, Status};

use crate::error::CridError;
use crate::images::{self, IMAGE_FIELD, ImageController};
use crate::objects::ImageRecord;
use crate::rpc::{not_built, now_nanos, traced};

#[derive(Clone)]
pub struct ImageApi {
    images: Arc<ImageController>,
}

impl ImageApi {
    pub fn new(images: Arc<ImageController>) -> ImageApi {
        ImageApi { images }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> RpcResult<ListImagesResponse> {
        let images = &self.images;
        traced("ListImages", request, |r| list(images, r)).await
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> RpcResult<ImageStatusResponse> {
        let images = &self.images;
        traced("ImageStatus", request, |r| status(images, r)).await
    }

    async fn pull_image(&self, request: Request<PullImageRequest>) -> RpcResult<PullImageResponse> {
        let images = &self.images;
        traced("PullImage", request, |r| pull(images, r)).await
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> RpcResult<RemoveImageResponse> {
        let images = &self.images;
        traced("RemoveImage", request, |r| remove(images, r)).await
    }

    async fn image_fs_info(
        &self,
        request: Request<ImageFsInfoRequest>,
    ) -> RpcResult<ImageFsInfoResponse> {
        let images = &self.images;
        traced("ImageFsInfo", request, |r| fs_info(images, r)).await
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

/// The image string of a request, refused when missing or empty.
fn requested_image(spec: Option<&ImageSpec>) -> Result<&str, CridError> {
    match spec.map(|s| s.image.as_str()) {
        Some(image) if !image.is_empty() => Ok(image),
        _ => Err(CridError::invalid(
            IMAGE_FIELD,
            "",
            "an image reference or id is required",
        )),
    }
}

async fn pull(
    images: &Arc<ImageController>,
    request: PullImageRequest,
) -> Result<PullImageResponse, CridError> {
    let image = requested_image(request.image.as_ref())?;
    let reference = images::parse_reference(image)?;
    let creds = match &request.auth {
        Some(auth) => {
            let auth = image::AuthConfig {
                username: auth.username.clone(),
                password: auth.password.clone(),
                auth: auth.auth.clone(),
                server_address: auth.server_address.clone(),
                identity_token: auth.identity_token.clone(),
                registry_token: auth.registry_token.clone(),
            };
            Credentials::from_auth_config(&auth, reference.registry())?
        }
        None => None,
    };
    let image_ref = images.pull(&reference, creds).await?;
    Ok(PullImageResponse { image_ref })
}

async fn status(
    images: &Arc<ImageController>,
    request: ImageStatusRequest,
) -> Result<ImageStatusResponse, CridError> {
    let image = requested_image(request.image.as_ref())?;
    let Some(record) = images.find(image)? else {
        // The CRI spec: an image that is not present is an empty response.
        return Ok(ImageStatusResponse::default());
    };
    let mut response = ImageStatusResponse {
        image: Some(images::to_cri(&record)),
        ..Default::default()
    };
    if request.verbose {
        response
            .info
            .insert("info".to_string(), verbose_info(images, &record).await?);
    }
    Ok(response)
}

/// containerd's verbose image info: the image config as `imageSpec` and the
/// top layer's `chainID`, plus the layers and the manifest crid pulled.
async fn verbose_info(images: &ImageController, record: &ImageRecord) -> Result<String, CridError> {
    let config = images.read_blob(&record.id).await?;
    let spec: serde_json::Value = serde_json::from_slice(&config).map_err(|e| {
        CridError::FailedPrecondition(format!(
            "image {}: stored config is not JSON: {e}",
            record.id
        ))
    })?;
    let layers: Vec<serde_json::Value> = record
        .image
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "digest": l.digest,
                "diffID": l.diff_id,
                "chainID": l.chain_id,
                "size": l.size,
                "mediaType": l.media_type,
            })
        })
        .collect();
    let info = serde_json::json!({
        "chainID": record.image.layers.last().map(|l| l.chain_id.clone()).unwrap_or_default(),
        "imageSpec": spec,
        "layers": layers,
        "manifestDigest": record.image.manifest_digest,
        "indexDigest": record.image.index_digest,
    });
    Ok(info.to_string())
}

async fn list(
    images: &Arc<ImageController>,
    request: ListImagesRequest,
) -> Result<ListImagesResponse, CridError> {
    let filter = request
        .filter
        .and_then(|f| f.image)
        .map(|spec| spec.image)
        .filter(|image| !image.is_empty());
    let images = images
        .list(filter.as_deref())
        .iter()
        .map(|r| images::to_cri(r))
        .collect();
    Ok(ListImagesResponse { images })
}

async fn remove(
    images: &Arc<ImageController>,
    request: RemoveImageRequest,
) -> Result<RemoveImageResponse, CridError> {
    let image = requested_image(request.image.as_ref())?;
    images.remove(image).await?;
    Ok(RemoveImageResponse {})
}

async fn fs_info(
    images: &Arc<ImageController>,
    _request: ImageFsInfoRequest,
) -> Result<ImageFsInfoResponse, CridError> {
    let usage = images.fs_usage().await?;
    let filesystem = FilesystemUsage {
        timestamp: now_nanos(),
        fs_id: Some(FilesystemIdentifier {
            mountpoint: usage.mountpoint.to_string_lossy().into_owned(),
        }),
        used_bytes: Some(UInt64Value {
            value: usage.used_bytes,
        }),
        inodes_used: Some(UInt64Value {
            value: usage.inodes_used,
        }),
    };
    // No split image file system: containers live on the same one.
    Ok(ImageFsInfoResponse {
        image_filesystems: vec![filesystem.clone()],
        container_filesystems: vec![filesystem],
    })
}
