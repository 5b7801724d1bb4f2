//! `GET /`: the upload page, and `GET /gallery`: every stored image (thumbnails, names,
//! links, delete), both embedded in the binary (no build step, no files at run time). The
//! gallery is a public page; what it shows comes from `GET /v1/images`, which needs the API
//! token when one is set.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use crate::state::AppState;

const INDEX: &str = include_str!("../../assets/index.html");
const GALLERY: &str = include_str!("../../assets/gallery.html");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/gallery", get(gallery))
}

async fn gallery() -> Html<&'static str> {
    Html(GALLERY)
}

async fn index() -> Html<&'static str> {
    Html(INDEX)
}
