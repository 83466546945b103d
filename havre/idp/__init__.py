"""The embedded OpenID Connect provider (``havre-idp``) and its password hashes."""
