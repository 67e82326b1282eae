"""Django's PostgreSQL backend with the pool's check of a connection that costs no round trip
(`chatsvc.database.base`; settings.py selects it for a `postgres://` DATABASE_URL)."""
