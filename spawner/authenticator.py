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

Logout ends everything (:class:`HavreLogoutHandler`): JupyterHub by itself only forgets the
tokens of the browser session that logs out, and a hub cookie copied earlier stays valid for
its whole lifetime. Havre's logout also makes every hub cookie of the user void, deletes every
OAuth token the user's sessions gave to notebook servers and the egress service, and revokes
the sign-in at the identity provider (RFC 7009). Servers and the egress service keep the hub's
answer about a token for one second (not JupyterHub's five minutes), so a captured cookie or
token is refused within a second of the logout. Logout also ends an open break-glass window.

Break glass (:mod:`havre.enclave.break_glass`): the provider's break-glass group only makes a user
eligible; the ``server-access`` group is never taken from the provider's claims, only from an
activation on ``/hub/break-glass``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from jupyterhub import orm
from jupyterhub.utils import new_token
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLogoutHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Float, Unicode

from havre.enclave.logs import security_event
from spawner import break_glass_hub

PROVIDER_DOWN = (
    "The sign-in provider is not answering right now, so Havre can't check your sign-in and "
    "starts no new server. Servers already running keep running. Try again in a minute; if it "
    "lasts, tell the enclave's administrator."
)


class HavreLogoutHandler(OAuthLogoutHandler):
    """Logout that ends every session of the user, not only this browser's (see above)."""

    async def handle_logout(self) -> None:
        user = self.current_user
        if user is not None:
            orm_user = user.orm_user
            orm_user.cookie_id = new_token()  # every hub cookie of this user is now void
            # tokens issued through OAuth to the user's servers and services (the server's
            # own token to talk to the hub is the global "jupyterhub" client's: kept, so
            # running work goes on)
            tokens = self.db.query(orm.APIToken).filter(
                orm.APIToken.user_id == orm_user.id, orm.APIToken.client_id != "jupyterhub"
            )
            ended = 0
            for token in tokens:
                self.db.delete(token)
                ended += 1
            self.db.commit()
            self.log.info("Logout of %s: hub cookies void, %d tokens ended", user.name, ended)
            await break_glass_hub.end_window(self.db, orm_user, "logout")
            await self.authenticator.revoke_at_provider(user)
        await super().handle_logout()


class HavreOAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator whose refresh tells an unreachable provider from a refusal, and
    whose logout ends every session of the user."""

    logout_handler = HavreLogoutHandler

    revocation_url = Unicode(
        "",
        config=True,
        help="""The identity provider's token revocation endpoint (RFC 7009). At logout the
        user's refresh token is revoked there, which ends that sign-in at the provider too.
        Empty: nothing is revoked at the provider (the hub's own sessions still end).""",
    )

    async def revoke_at_provider(self, user: Any) -> None:
        """Revoke the user's refresh token at the provider; failures are logged, never raised."""
        if not self.revocation_url:
            return
        auth_state = await user.get_auth_state() or {}
        token = auth_state.get("refresh_token") or auth_state.get("access_token")
        if not token:
            return
        body = urlencode({"token": token, "token_type_hint": "refresh_token"})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.basic_auth:
            auth = {"auth_username": self.client_id, "auth_password": self.client_secret}
        else:
            auth = {}
            body += "&" + urlencode(
                {"client_id": self.client_id, "client_secret": self.client_secret}
            )
        request = HTTPRequest(
            self.revocation_url,
            method="POST",
            body=body,
            headers=headers,
            request_timeout=self.provider_check_timeout,
            validate_cert=self.validate_server_cert,
            **auth,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except Exception as err:
            self.log.error("Could not revoke %s's sign-in at the provider: %s", user.name, err)
            return
        if response.code != 200:
            self.log.error(
                "The provider refused to revoke %s's sign-in: HTTP %s", user.name, response.code
            )
        await user.save_auth_state(None)  # the hub keeps no token of an ended sign-in

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

    async def _token_to_auth_model(self, token_info: Any) -> Any:
        """The provider's answer as a sign-in or refresh gives it, with break glass applied:
        the provider's group only makes a user eligible (hub group ``break-glass``);
        ``server-access`` comes from an open activation alone (``spawner.break_glass_hub``)."""
        auth_model = await super()._token_to_auth_model(token_info)
        if isinstance(auth_model, dict) and "groups" in auth_model:
            auth_model = break_glass_hub.adjust_groups(auth_model)
        return auth_model

    async def check_allowed(self, username: str, auth_model: Any = None) -> bool:
        """OAuthenticator's decision, with a refusal logged as ``login.refused``."""
        allowed = await super().check_allowed(username, auth_model)
        if not allowed:
            groups = (auth_model or {}).get("groups") if isinstance(auth_model, dict) else None
            security_event(
                self.log,
                "login.refused",
                "Sign-in of %s refused: no Havre project group or role",
                username,
                user=username,
                hub_groups=list(groups or []),
            )
        return allowed

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
