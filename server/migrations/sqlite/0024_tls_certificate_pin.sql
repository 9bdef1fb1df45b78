-- TLS certificate pins (sqlite; kept in step with ../postgres/0024_tls_certificate_pin.sql).
-- The certificate a target (a database or directory server) presented at first use: its
-- leaf's `SHA256:…` fingerprint, pinned like an SSH host key (reset/connector/tls_pin.rs).
ALTER TABLE resource_reset_settings ADD COLUMN tls_certificate TEXT;
