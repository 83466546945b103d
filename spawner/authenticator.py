"""Sign-in through the site's OpenID Connect provider, telling "the provider didn't answer"
from "this sign-in is over".

JupyterHub refreshes a user's sign-in before each spawn and Havre does so at every membership
check of a running server (:meth:`spawner.project_spawner.ProjectSpawner.poll`).
OAuthenticator answers ``False`` ("sign in again") both when the provider refused the refresh
token and when it could not be reached, and raises for some network errors. A provider that is
restarting or down must not end anyone's work, and must not look like a server error either:

* the provider answered and refused: ``False``, as before (running servers stop, new ones need
  a new sign-in);
* the provider did not answer (no connection, a name that doesn't resolve, a timeout, a 5xx):
  :class:`tornado.web.HTTPError` 503 with a sentence, so a spawn is refused with "try again in
  a minute" and a running server is kept.
"""

from __future__ import annotations

from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Float

PROVIDER_DOWN = (
    "The sign-in provider is not answering right now, so Havre can't check your sign-in and "
    "starts no new server. Servers already running keep running. Try again in a minute; if it "
    "lasts, tell the enclave's administrator."
)


class HavreOAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator whose refresh tells an unreachable provider from a refusal."""

    provider_check_timeout = Float(
        10.0,
        config=True,
        help="""Seconds to wait for any answer from the identity provider's token endpoint
        when a refresh failed, to tell "provider down" (keep running servers, refuse new ones
        with a 503) from "sign-in refused" (stop servers, ask for a new sign-in).""",
    )

    async def provider_answers(self) -> bool:
        """Whether the provider's token endpoint gives any HTTP answer below 500."""
        if not self.token_url:
            return True
        try:
            response = await AsyncHTTPClient().fetch(
                self.token_url,
                method="GET",
                raise_error=False,
                connect_timeout=min(5.0, self.provider_check_timeout),
                request_timeout=self.provider_check_timeout,
                validate_cert=self.validate_server_cert,
            )
        except Exception as err:  # refused, unresolvable, TLS, timeout: no answer
            self.log.debug("identity provider at %s gave no answer: %s", self.token_url, err)
            return False
        return 0 < response.code < 500

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        try:
            result = await super().refresh_user(user, handler, **kwargs)
        except (TimeoutError, OSError, HTTPClientError) as err:
            self.log.error("Identity provider unreachable while refreshing %s: %s", user.name, err)
            raise web.HTTPError(503, PROVIDER_DOWN) from err
        if result is False and not await self.provider_answers():
            self.log.error("Identity provider unreachable while refreshing %s", user.name)
            raise web.HTTPError(503, PROVIDER_DOWN)
        return result
