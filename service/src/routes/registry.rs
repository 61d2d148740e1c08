//! The registry's routes (service.md §2): the signed index and package files, read-only,
//! with entity tags.

use crate::*;

pub(crate) fn registry_root(service: &Service) -> Result<&Path, ApiError> {
    service.registry.as_deref().ok_or_else(|| not_served("registry"))
}

/// Reads a registry file that lies inside the registry directory (no link leads out).
/// `path` once resolved, if it is a file inside `root` (a served directory).
pub(crate) fn file_inside(root: &Path, path: &Path) -> Result<PathBuf, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such file");
    let real = std::fs::canonicalize(path).map_err(|_| missing())?;
    let real_root = std::fs::canonicalize(root).map_err(|_| missing())?;
    if !real.starts_with(&real_root) || !real.is_file() {
        return Err(missing());
    }
    Ok(real)
}

pub(crate) fn read_failed(e: &std::io::Error) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "io", format!("reading a served file: {e}")).retry(1)
}

/// A small served file (an index, a statement's proofs), whole.
pub(crate) fn read_inside(root: &Path, path: &Path) -> Result<Vec<u8>, ApiError> {
    std::fs::read(file_inside(root, path)?).map_err(|e| read_failed(&e))
}

pub(crate) async fn registry_index(
    State(service): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let bytes = blocking(move || {
        let root = registry_root(&service)?;
        read_inside(root, &root.join(escx_manifest::index::INDEX_FILE))
    })
    .await?;
    Ok(tagged(&headers, bytes, "application/cbor", Some("no-cache")))
}

/// A package file's entity tag, hashed once per file version: registry package files are
/// immutable, and a changed length or modification time hashes the file again.
pub(crate) struct FileTag {
    len: u64,
    modified: std::time::SystemTime,
    tag: String,
}

/// Files whose tags are kept; beyond that the cache starts over.
pub(crate) const FILE_TAGS_MAX: usize = 4096;

pub(crate) fn file_tag(service: &Service, real: &Path) -> Result<(String, u64), ApiError> {
    let meta = std::fs::metadata(real).map_err(|e| read_failed(&e))?;
    let modified = meta.modified().map_err(|e| read_failed(&e))?;
    let fresh = |t: &FileTag| t.len == meta.len() && t.modified == modified;
    if let Some(held) = service.file_tags.lock().unwrap_or_else(PoisonError::into_inner).get(real)
        && fresh(held)
    {
        return Ok((held.tag.clone(), held.len));
    }
    let mut hasher = blake3::Hasher::new();
    let file = std::fs::File::open(real).map_err(|e| read_failed(&e))?;
    hasher.update_reader(file).map_err(|e| read_failed(&e))?;
    let tag = format!("\"{}\"", &hasher.finalize().to_hex()[..32]);
    let mut tags = service.file_tags.lock().unwrap_or_else(PoisonError::into_inner);
    if tags.len() >= FILE_TAGS_MAX {
        tags.clear();
    }
    tags.insert(real.to_path_buf(), FileTag { len: meta.len(), modified, tag: tag.clone() });
    Ok((tag, meta.len()))
}

pub(crate) fn held_by_client(request: &HeaderMap, tag: &str) -> bool {
    request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
}

/// A package file, streamed from disk (never held in memory whole), with its tag; 304
/// without reading it when the client holds it.
pub(crate) async fn registry_package(
    State(service): State<Shared>,
    UrlPath(rest): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such package file");
    let (name, version) = rest.strip_suffix(".escx").and_then(|p| p.rsplit_once('/')).ok_or_else(missing)?;
    // Only a valid name and version make a path (registry.md §1).
    let name = escx::header::PackageName::parse(name).map_err(|_| missing())?;
    let version = escx::header::parse_version(version).map_err(|_| missing())?.to_string();
    let (real, tag, len) = blocking(move || {
        let root = registry_root(&service)?;
        let real = file_inside(root, &escx_manifest::index::package_path(root, name.as_str(), &version))?;
        let (tag, len) = file_tag(&service, &real)?;
        Ok((real, tag, len))
    })
    .await?;
    let mut response = if held_by_client(&headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let file = tokio::fs::File::open(&real).await.map_err(|e| read_failed(&e))?;
        let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
        (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            [(header::CONTENT_LENGTH, len.to_string())],
            body,
        )
            .into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    Ok(response)
}
