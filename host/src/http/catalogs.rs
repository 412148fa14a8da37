//! The catalog read side, and the upsert used to set products up.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::openapi::{Identifier, Name};
use super::{ApiError, ApiJson, ApiPath, AppState};
use crate::db;
use crate::db::catalog::Product;
use crate::domain::{ProductId, ValidationError, check_unit_price, parse_name};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductResponse {
    product_id: String,
    product_name: String,
    /// Units in stock now.
    stock: i64,
    /// In minor units (cents).
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

/// A product to create or replace.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"productName": "Fountain pen", "stock": 100, "unitPrice": 1500}))]
pub struct PutProduct {
    #[schema(value_type = Name)]
    product_name: String,
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "super::json_integer")]
    stock: i64,
    /// In minor units (cents); at most `MAX_UNIT_PRICE`.
    #[schema(minimum = 0, maximum = 9_223_372_036_854_i64)]
    #[serde(deserialize_with = "super::json_integer")]
    unit_price: i64,
}

/// Every product with its stock.
#[utoipa::path(
    get,
    path = "/catalogs",
    tag = "catalog",
    operation_id = "listProducts",
    responses((status = 200, description = "Products by id", body = Vec<ProductResponse>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<ProductResponse>>, ApiError> {
    let products = db::catalog::list(&state.pool).await?;
    Ok(Json(products.into_iter().map(Into::into).collect()))
}

/// One product with its stock.
#[utoipa::path(
    get,
    path = "/catalogs/{product_id}",
    tag = "catalog",
    operation_id = "getProduct",
    params(("product_id" = inline(Identifier), Path, description = "The product's id")),
    responses(
        (status = 200, description = "The product", body = ProductResponse),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 422, description = "`product_id` is not an acceptable id", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(product_id): ApiPath<String>,
) -> Result<Json<ProductResponse>, ApiError> {
    let product_id = ProductId::parse(&product_id)?;
    let product = db::catalog::get(&state.pool, product_id.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no product {product_id}")))?;
    Ok(Json(product.into()))
}

/// Create or replace a product (setting products up; admin).
#[utoipa::path(
    put,
    path = "/catalogs/{product_id}",
    tag = "catalog",
    operation_id = "putProduct",
    params(("product_id" = inline(Identifier), Path, description = "The product's id")),
    request_body = PutProduct,
    responses(
        (status = 200, description = "Replaced", body = ProductResponse,
            links(("GetPutProduct" = (operation_id = "getProduct",
                parameters(("product_id" = "$request.path.product_id")),
                description = "The product as stored")))),
        (status = 201, description = "Created", body = ProductResponse,
            links(("GetPutProduct" = (operation_id = "getProduct",
                parameters(("product_id" = "$request.path.product_id")),
                description = "The product as stored")))),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A field is missing or not acceptable", body = ErrorBody),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    ApiPath(product_id): ApiPath<String>,
    ApiJson(body): ApiJson<PutProduct>,
) -> Result<(StatusCode, Json<ProductResponse>), ApiError> {
    let product_id = ProductId::parse(&product_id)?;
    let name = parse_name("productName", body.product_name.trim())?;
    if body.stock < 0 {
        return Err(
            ValidationError(format!("`stock` must not be negative, got {}", body.stock)).into(),
        );
    }
    check_unit_price(body.unit_price)?;
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
