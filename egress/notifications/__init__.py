"""E-mail notifications of the egress service: :mod:`.smtp` (the relay's settings, a checked
plain-text message, sending it) and :mod:`.mailer` (delivering the outbox that operations fill,
:mod:`egress.operations.notifications`)."""
