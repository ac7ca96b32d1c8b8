"""The connection to a Kubeflow Pipelines API: host, credentials, bounded requests, errors.

From ``config.kubeflow``: the API URL is ``host``, else the ``KFP_HOST`` environment variable,
else (``in_cluster`` only) the in-cluster ``ml-pipeline`` service. With ``in_cluster: true``
requests carry the pod's credentials, re-read from disk on every request because the kubelet
rotates them: KFP's projected token (``KF_PIPELINES_SA_TOKEN_PATH``, by default
``/var/run/secrets/kubeflow/pipelines/token``) when mounted, else the pod's service-account
token. Otherwise they carry the bearer token held by the environment variable that
``token_env`` names, when it is set, and no credentials when it is not. Tokens are never
logged nor put in messages.

Every failure is a :class:`KubeflowError` (a ``KfbatchError``) whose message is one line naming
the host and what to do. Requests have a timeout and are neither retried nor redirected (a
redirect is usually a login page, reported as such).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kfp_server_api
import urllib3
from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH, Client
from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

from pipelines.config.schema import KubeflowConfig
from pipelines.errors import ConfigError, KfbatchError

__all__ = [
    "HOST_ENV",
    "Connection",
    "KubeflowAuthError",
    "KubeflowError",
    "KubeflowNotFound",
    "KubeflowUnreachable",
]

#: Environment variable read when ``kubeflow.host`` is null.
HOST_ENV = "KFP_HOST"
#: The KFP API inside the cluster (``in_cluster`` without a host).
IN_CLUSTER_HOST = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
#: The pod's own service-account token, used in-cluster when no KFP token is mounted.
POD_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"

_CONNECT_TIMEOUT_S = 10.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PORT_FORWARD = (
    "e.g. `kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888` "
    "with kubeflow.host=http://localhost:8888"
)

T = TypeVar("T")


class KubeflowError(KfbatchError):
    """KFP refused a request, failed, or could not be reached; the message says what to do.

    Args:
        message: One line naming the host and what to do.
        status: The HTTP status, when the API answered.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeflowUnreachable(KubeflowError):
    """No answer from the KFP API: connection refused, unknown host, timeout, TLS failure."""


class KubeflowAuthError(KubeflowError):
    """The KFP API wants credentials (401, or a redirect to a login page) or denies access (403)."""


class KubeflowNotFound(KubeflowError):
    """The requested object (or the API path itself) does not exist (404)."""


@dataclass(frozen=True)
class _Auth:
    """How requests authenticate; the token itself is never shown."""

    env_name: str
    token: str | None = field(default=None, repr=False)
    token_path: str | None = None

    def fix_unauthenticated(self) -> str:
        if self.token_path == POD_TOKEN_PATH:
            return (
                f"the pod's service-account token ({self.token_path}) was not accepted; mount "
                "KFP's token (a projected service-account token with audience "
                f"pipelines.kubeflow.org) at {KF_PIPELINES_SA_TOKEN_PATH}"
            )
        if self.token_path:
            return (
                f"the pod's token from {self.token_path} was not accepted; check that it is "
                "projected with audience pipelines.kubeflow.org"
            )
        if self.token:
            return (
                f"the bearer token in ${self.env_name} was not accepted (expired, or for another "
                f"cluster?); set {self.env_name} to a fresh token"
            )
        return (
            f"no token was sent; set the environment variable {self.env_name} to a bearer token "
            "(kubeflow.token_env names the variable)"
        )

    def identity(self) -> str:
        if self.token_path:
            return f"the pod's service account (token {self.token_path})"
        if self.token:
            return f"the identity of the token in ${self.env_name}"
        return f"an anonymous request (no token in ${self.env_name})"


class _BoundedRest(kfp_server_api.rest.RESTClientObject):
    """kfp-server-api's transport with a timeout on every request, no retries, no redirects."""

    def __init__(self, configuration: kfp_server_api.Configuration, timeout_s: float) -> None:
        configuration.retries = False
        super().__init__(configuration)
        self._timeout = (min(_CONNECT_TIMEOUT_S, timeout_s), timeout_s)

    def request(
        self,
        method: str,
        url: str,
        query_params: Any = None,
        headers: Any = None,
        body: Any = None,
        post_params: Any = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        return super().request(
            method,
            url,
            query_params=query_params,
            headers=headers,
            body=body,
            post_params=post_params,
            _preload_content=_preload_content,
            _request_timeout=_request_timeout or self._timeout,
        )


class _NotTheApi(Exception):
    """The health check was answered, but not with the KFP API's JSON."""


class _BoundedClient(Client):
    """kfp.Client with bounded requests and one checked health check.

    kfp's own health check (called by its constructor) retries 5 times, 5 s apart, and takes
    any answer, a login page included.
    """

    def __init__(self, *, request_timeout_s: float, **kwargs: Any) -> None:
        self._request_timeout_s = request_timeout_s
        self._healthz: Any = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
            super().__init__(**kwargs)
        self._bound()

    def _bound(self) -> None:
        api_client = self._healthz_api.api_client
        if not isinstance(api_client.rest_client, _BoundedRest):
            api_client.rest_client = _BoundedRest(api_client.configuration, self._request_timeout_s)

    def set_user_namespace(self, namespace: str) -> None:
        """Use ``namespace`` in this client only (kfp also writes it to ~/.config/kfp)."""
        self._context_setting["namespace"] = namespace

    def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
        """The health check's answer, requested once.

        Raises:
            _NotTheApi: The answer is not JSON.
        """
        if self._healthz is None:
            self._bound()
            response = self._healthz_api.healthz_service_get_healthz(_preload_content=False)
            content_type = response.headers.get("Content-Type", "")
            try:
                body = json.loads(response.data)
            except ValueError:
                body = None
            if "json" not in content_type or not isinstance(body, dict):
                raise _NotTheApi(content_type or "no content type")
            self._healthz = kfp_server_api.V2beta1GetHealthzResponse(
                multi_user=body.get("multi_user"), pipeline_store=body.get("pipeline_store")
            )
        return self._healthz


class Connection:
    """An open, health-checked connection to one KFP API.

    Args:
        kubeflow: The ``kubeflow`` group of the composed config.
        request_timeout_s: Timeout of each request, in seconds.

    Attributes:
        host: The API URL.
        ui: The UI base URL for links, or None (in-cluster service).
        namespace: The namespace (Kubeflow profile) requests act in.
        kfp: The ``kfp.Client`` to call through :meth:`call`.

    Raises:
        ConfigError: No host is configured, or the credentials settings are unusable.
        KubeflowError: The endpoint is unreachable, refuses the health check, or is not the
            KFP API.
    """

    def __init__(self, kubeflow: KubeflowConfig, *, request_timeout_s: float) -> None:
        self.namespace = kubeflow.namespace
        self.host, self.ui = _resolve_host(kubeflow)
        self._auth = _resolve_auth(kubeflow)
        credentials = (
            ServiceAccountTokenVolumeCredentials(self._auth.token_path)
            if self._auth.token_path
            else None
        )
        self.kfp = self.call(
            "answer its health check",
            _BoundedClient,
            request_timeout_s=request_timeout_s,
            host=self.host,
            namespace=self.namespace,
            existing_token=self._auth.token,
            credentials=credentials,
        )
        self.call("answer its health check", self.kfp.get_kfp_healthz)

    def call(
        self,
        action: str,
        function: Callable[..., T],
        /,
        *args: Any,
        not_found: str | None = None,
        **kwargs: Any,
    ) -> T:
        """Call kfp, turning its failures into one-line errors and discarding what it prints."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # kfp prints UI links
                return function(*args, **kwargs)
        except kfp_server_api.ApiException as error:
            raise self._api_error(error, action, not_found) from error
        except _NotTheApi as error:
            raise KubeflowError(
                f"{self.host} is not the KFP API: /apis/v2beta1/healthz answered with {error}; "
                f"set kubeflow.host to the KFP API URL, such as https://<kubeflow>/pipeline, "
                f"or {_PORT_FORWARD}"
            ) from error
        except urllib3.exceptions.HTTPError as error:
            raise KubeflowUnreachable(self._unreachable(_network_reason(error))) from error

    def _unreachable(self, reason: str) -> str:
        return (
            f"cannot reach the KFP API at {self.host} ({reason}): check kubeflow.host "
            f"(or {HOST_ENV}) and that the endpoint is up, {_PORT_FORWARD}"
        )

    def _api_error(
        self, error: kfp_server_api.ApiException, action: str, not_found: str | None
    ) -> KubeflowError:
        status = int(error.status or 0)
        where = f"the KFP API at {self.host}"
        detail = _server_message(error)
        if status == 0:
            lines = str(error.reason or "transport error").strip().splitlines()
            return KubeflowUnreachable(self._unreachable(lines[-1][:200] if lines else ""))
        if 300 <= status < 400:
            location = (error.headers or {}).get("Location", "another page")
            return KubeflowAuthError(
                f"{where} redirected the request to {location} (HTTP {status}), which looks like "
                f"a login page: send a bearer token in ${self._auth.env_name} "
                "(kubeflow.token_env), or set kubeflow.host to the KFP API itself",
                status=status,
            )
        if status == 401:
            return KubeflowAuthError(
                f"{where} refused to {action}: not authenticated (401{detail}); "
                f"{self._auth.fix_unauthenticated()}",
                status=status,
            )
        if status == 403:
            return KubeflowAuthError(
                f"{where} refused to {action} in namespace '{self.namespace}' (403 "
                f"forbidden{detail}): {self._auth.identity()} has no access there; check "
                "kubeflow.namespace and that you are a contributor of that Kubeflow profile",
                status=status,
            )
        if status == 404:
            if not_found:
                return KubeflowNotFound(f"{not_found} at {self.host} (404{detail})", status=status)
            return KubeflowNotFound(
                f"{where} could not {action}: not found (404{detail}); check that kubeflow.host "
                "is the KFP API URL (the one that serves /apis/v2beta1/)",
                status=status,
            )
        if status >= 500:
            return KubeflowError(
                f"{where} failed to {action} ({status}{detail}); retry later, or check the logs "
                "of its ml-pipeline API server",
                status=status,
            )
        return KubeflowError(f"{where} refused to {action} ({status}{detail})", status=status)


def _resolve_host(kubeflow: KubeflowConfig) -> tuple[str, str | None]:
    """The API URL and the UI base URL (None for the in-cluster service)."""
    host, source = kubeflow.host, ""
    if not host:
        host, source = os.environ.get(HOST_ENV, "").strip(), f"environment variable {HOST_ENV}"
    if not host:
        if kubeflow.in_cluster:
            return IN_CLUSTER_HOST, None
        raise ConfigError(
            "kubeflow.host",
            f"the KFP API URL, e.g. https://kubeflow.example.com/pipeline (or set {HOST_ENV})",
            None,
        )
    if not re.match(r"^https?://[^/\s]+", host):
        raise ConfigError(
            "kubeflow.host", "an http:// or https:// URL of the KFP API", host, source=source
        )
    return host.rstrip("/"), host.rstrip("/")


def _resolve_auth(kubeflow: KubeflowConfig) -> _Auth:
    if not _ENV_NAME.match(kubeflow.token_env):
        # Never echo the value: a token pasted here by mistake must not reach the terminal.
        raise ConfigError(
            "kubeflow.token_env",
            "the NAME of an environment variable that holds the token (not the token itself)",
        )
    if kubeflow.in_cluster:
        kfp_path = os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH
        for path in (kfp_path, POD_TOKEN_PATH):
            if os.path.isfile(path):
                return _Auth(kubeflow.token_env, token_path=path)
        raise ConfigError(
            "kubeflow.in_cluster",
            f"to run in a pod with a service-account token (none at {kfp_path} or "
            f"{POD_TOKEN_PATH}); set kubeflow.in_cluster=false outside a cluster",
            True,
        )
    token = os.environ.get(kubeflow.token_env, "").strip()
    return _Auth(kubeflow.token_env, token=token or None)


def _server_message(error: kfp_server_api.ApiException) -> str:
    """': <message>' from an API error body (JSON or text), or '' when there is none."""
    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = ""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("message", "error_message", "error"):
            if isinstance(parsed.get(key), str) and parsed[key].strip():
                text = parsed[key]
                break
    elif body and "<html" not in body.lower():
        text = body
    text = " ".join(text.split())
    return f": {text[:300]}" if text else ""


def _network_reason(error: BaseException) -> str:
    """A few words for a transport failure (no urllib3 object dumps)."""
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        error = error.reason
    exceptions = urllib3.exceptions
    if isinstance(error, exceptions.NameResolutionError):
        return "host name not found"
    if isinstance(error, exceptions.NewConnectionError):
        return "connection refused" if "refused" in str(error).lower() else "connection failed"
    if isinstance(error, exceptions.ConnectTimeoutError | exceptions.ReadTimeoutError):
        return "no answer in time"
    if isinstance(error, exceptions.SSLError):
        return "TLS handshake failed"
    if isinstance(error, exceptions.ProtocolError):
        return "connection closed by the server"
    return error.__class__.__name__
