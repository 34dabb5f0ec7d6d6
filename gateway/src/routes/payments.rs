//! VNPAY's calls: the IPN webhook and the buyer's return page. Neither is authenticated by a
//! token: the HMAC-SHA512 signature over the `vnp_*` parameters is the authentication.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::Html;
use serde_json::{Value, json};

use crate::AppState;

/// The query's pairs in order, duplicates kept (the verifier refuses them as forged).
fn query_pairs(raw: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// `GET /v1/payments/vnpay/ipn`: always 200 with `{"RspCode","Message"}`, as VNPAY expects.
pub async fn ipn(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Json<Value> {
    let answer = state.checkout().vnpay_ipn(query_pairs(raw)).await;
    Json(json!({"RspCode": answer.rsp_code, "Message": answer.message}))
}

/// `GET /v1/payments/vnpay/return`: where VNPAY sends the buyer's browser back, and where the
/// buyers' e-mails link (without VNPAY's parameters: a page on where the tickets are).
pub async fn return_page(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Html<String> {
    if !raw
        .as_deref()
        .is_some_and(|q| q.contains("vnp_SecureHash="))
    {
        return Html(
            "<!doctype html><html lang=\"vi\"><head><meta charset=\"utf-8\">\
             <title>Holdfast</title></head><body><h1>Holdfast</h1>\
             <p lang=\"vi\">Vé của bạn được đính kèm trong e-mail dưới dạng mã QR; mỗi người \
             xuất trình một mã tại cửa. E-mail cũng cho biết tình trạng đơn hàng.</p>\
             <p lang=\"en\">Your tickets are attached to our e-mail as QR codes; show one at the \
             door per person. The e-mail also tells where your order stands.</p></body></html>"
                .to_owned(),
        );
    }
    let page = state.checkout().vnpay_return(query_pairs(raw)).await;
    let (title, text) = if !page.verified {
        (
            "Payment result not recognised",
            "These payment details are not signed by VNPAY. Your order is unchanged.".to_owned(),
        )
    } else if page.paid {
        (
            "Payment received",
            format!(
                "Thank you. Order {}: {}. Your tickets arrive by e-mail and in your account.",
                page.order_id.as_deref().unwrap_or("?"),
                page.order_status.as_deref().unwrap_or("being confirmed"),
            ),
        )
    } else {
        (
            "Payment not completed",
            format!(
                "Order {} was not paid; its seats are released.",
                page.order_id.as_deref().unwrap_or("?"),
            ),
        )
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         </head><body><h1>{title}</h1><p>{}</p></body></html>",
        escape(&text)
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
