//! Signed ticket codes and their QR images.
//!
//! A ticket code is `HF1.<payload>.<signature>`, both parts base64url without padding:
//! the payload is the ticket id and event id (16 bytes each), then the key id and the ticket
//! type, each prefixed by its length in one byte; the signature is Ed25519 over a fixed
//! context string followed by the payload bytes. The key id inside the signed payload picks
//! the public key, so keys rotate by adding the new key to every [`Verifier`] before signing
//! with it, and dropping the old one once its tickets are no longer valid. A typical code is
//! about 150 characters: a version 8 or 9 QR code at error correction level M.
//!
//! Signing and verifying are pure; check-in state (admitted once, refunded) is the caller's.

mod code;
mod label;
mod qr;

pub use code::{
    Error, InvalidTicket, KEY_ID_MAX, PREFIX, Signer, TICKET_TYPE_MAX, TicketPayload, Verifier,
};
pub use label::fold as label_text;
pub use qr::{MODULE_PX, QUIET_ZONE_MODULES, QrError, qr_png, qr_png_labelled};
