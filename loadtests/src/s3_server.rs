//! A local S3-compatible server for the `attachments` scenario (`--serve-s3`): s3s over
//! s3s-fs, checking SigV4 signatures with the keys given, objects in a directory. The same
//! server the tests run in process (tests/common/s3.rs), as a process of its own so that
//! `scripts/bench` can point the pods and the plain-copy baseline at it.

use std::net::SocketAddr;
use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// Serves S3 on `addr` with objects under `root` until the process ends; returns the bound
/// address once listening.
pub async fn serve(
    addr: &str,
    root: &Path,
    access_key: &str,
    secret_key: &str,
) -> anyhow::Result<SocketAddr> {
    std::fs::create_dir_all(root)?;
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?;
    let service = {
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        builder.build()
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            // No Nagle delay on a response's last small segment (as S3 services do).
            let _ = socket.set_nodelay(true);
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    });
    Ok(address)
}
