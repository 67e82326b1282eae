"""Django's PostgreSQL backend without two round trips: the pool's check of a connection it hands out,
and a transaction's BEGIN on its own (`chatsvc.database.base`; settings.py selects it for a
`postgres://` DATABASE_URL)."""
