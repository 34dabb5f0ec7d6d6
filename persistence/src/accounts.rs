//! User accounts: credentials and roles. Emails are unique regardless of case.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{Error, Store, is_unique_violation, parse_uuid, uuid_text};

/// A user to register; the password is already hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUser {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    /// Mobile number in E.164 form, for SMS.
    pub phone: Option<String>,
    /// The organizer a staff account works for; `None` for other roles.
    pub organizer_id: Option<Uuid>,
    pub created_at_ms: i64,
    /// `vi` or `en`: the language of the account's messages.
    pub language: String,
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub id: Uuid,
    /// As registered; compare case-insensitively.
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub phone: Option<String>,
    pub organizer_id: Option<Uuid>,
    pub created_at_ms: i64,
    /// `vi` or `en`: the language of the account's messages.
    pub language: String,
}

const USER_COLUMNS: &str =
    "id, email, name, password_hash, role, phone, organizer_id, created_at, language";

impl UserRow {
    fn from_row(row: &AnyRow) -> Result<Self, Error> {
        Ok(Self {
            id: parse_uuid("users.id", &row.try_get::<String, _>("id")?)?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            password_hash: row.try_get("password_hash")?,
            role: row.try_get("role")?,
            phone: row.try_get("phone")?,
            organizer_id: row
                .try_get::<Option<String>, _>("organizer_id")?
                .map(|id| parse_uuid("users.organizer_id", &id))
                .transpose()?,
            created_at_ms: row.try_get("created_at")?,
            language: row.try_get("language")?,
        })
    }
}

impl Store {
    /// Registers `user`; [`Error::Conflict`] if the email (in any case) or the id is taken.
    pub async fn create_user(&self, user: &NewUser) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO users \
             (id, email, name, password_hash, role, created_at, phone, organizer_id, language) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(uuid_text(user.id))
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.role.as_str())
        .bind(user.created_at_ms)
        .bind(user.phone.as_deref())
        .bind(user.organizer_id.map(uuid_text))
        .bind(user.language.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Conflict
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    /// The user registered with `email`, compared case-insensitively.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, Error> {
        // `lower(email)` matches the unique index, so the lookup uses it.
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1)");
        let row = sqlx::query(&sql)
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(UserRow::from_row).transpose()
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRow>, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(UserRow::from_row).transpose()
    }
}
