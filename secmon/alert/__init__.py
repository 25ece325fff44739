"""Alert emails: render per agency language and time zone, queue in an outbox, deliver over SMTP."""
