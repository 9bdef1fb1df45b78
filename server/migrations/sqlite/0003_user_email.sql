-- Users may give an email address; approval notifications are also mailed there when the
-- server has an SMTP relay (--smtp-url).
ALTER TABLE users ADD COLUMN email TEXT;
