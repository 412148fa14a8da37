//! The catalog read side, and the upsert used to set products up.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::db;
use crate::db::catalog::Product;
use crate::domain::{ProductId, ValidationError, parse_name};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductResponse {
    product_id: String,
    product_name: String,
    stock: i64,
    unit_price: i64,
}

impl From<Product> for ProductResponse {
    fn from(p: Product) -> Self {
        Self {
            product_id: p.product_id,
            product_name: p.product_name,
            stock: p.stock,
            unit_price: p.unit_price,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutProduct {
    product_name: String,
    stock: i64,
    unit_price: i64,
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<ProductResponse>>, ApiError> {
    let products = db::catalog::list(&state.pool).await?;
    Ok(Json(products.into_iter().map(Into::into).collect()))
}

pub async fn get(
    State(state): State<AppState>,
    product_id: Result<Path<String>, PathRejection>,
) -> Result<Json<ProductResponse>, ApiError> {
    let Path(product_id) = product_id?;
    let product_id = ProductId::parse(&product_id)?;
    let product = db::catalog::get(&state.pool, product_id.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no product {product_id}")))?;
    Ok(Json(product.into()))
}

pub async fn put(
    State(state): State<AppState>,
    product_id: Result<Path<String>, PathRejection>,
    body: Result<Json<PutProduct>, JsonRejection>,
) -> Result<(StatusCode, Json<ProductResponse>), ApiError> {
    let Path(product_id) = product_id?;
    let Json(body) = body?;
    let product_id = ProductId::parse(&product_id)?;
    let name = parse_name("productName", body.product_name.trim())?;
    if body.stock < 0 {
        return Err(
            ValidationError(format!("`stock` must not be negative, got {}", body.stock)).into(),
        );
    }
    if body.unit_price < 0 {
        return Err(ValidationError(format!(
            "`unitPrice` must not be negative, got {}",
            body.unit_price
        ))
        .into());
    }
    let (product, created) = db::catalog::upsert(
        &state.pool,
        product_id.as_str(),
        &name,
        body.stock,
        body.unit_price,
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(product.into())))
}
