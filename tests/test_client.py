"""Unit tests of the HTTP client with ``responses`` (the Execution Manager's calls, through requests):
every failure reason, and the layout fallback; the side calls' redirects against a server on loopback."""

import json
import random
import string
import threading
import time
import urllib.parse

import pytest
import requests
import responses
from hypothesis import given
from hypothesis import strategies as st

from exporter.client import SEARCH_LAYOUT, ApiError, ExecutionManagerClient, _Deadline
from exporter.settings import Cloud

from .conftest import FIXTURES
from .helpers import Canned, RawServer, answer_bytes, hanging_port, read_request

TOKEN = "tok-3f9a-never-shown"
BASE = "https://acme.executions.perfectomobile.com"
SEARCH = BASE + "/execution-manager/api/v1/executions/search"
STOP = BASE + "/execution-manager/api/v1/executions/stop"
DOCUMENT_ANSWER = json.loads((FIXTURES / "document_search_response.json").read_text())
DOCUMENT_ERROR = (FIXTURES / "document_error_response.json").read_text()


@pytest.fixture
def client():
    c = ExecutionManagerClient(Cloud("acme", BASE, TOKEN), retries=0, max_response_bytes=10_000)
    yield c
    c.close()


def search(client) -> list:
    """One search, its entries decoded."""
    return [json.loads(bytes(raw)) for raw in client.search()]


def failure_counts(client, endpoint="search"):
    return {key[2]: v for key, v in client.stats.failures.read().items() if key[1] == endpoint and v}


@responses.activate
def test_search_sends_token_and_layout_and_returns_the_list(client):
    responses.post(SEARCH, json=DOCUMENT_ANSWER)
    assert search(client) == DOCUMENT_ANSWER
    sent = responses.calls[0].request
    assert sent.headers["Perfecto-Authorization"] == TOKEN
    assert json.loads(sent.body) == {"layout": list(SEARCH_LAYOUT)}
    assert client.stats.requests.total(endpoint="search") == 1
    assert failure_counts(client) == {}


@pytest.mark.parametrize(
    "status, body, reason",
    [
        (401, DOCUMENT_ERROR, "auth"),
        (403, DOCUMENT_ERROR, "auth"),
        (404, "<html>not here</html>", "bad_request"),
        (429, "", "server_error"),
        (500, DOCUMENT_ERROR, "server_error"),
        (502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "server_error"),
        (302, "", "invalid_response"),
        (200, "<html>login page</html>", "invalid_response"),
        (200, '[{"id": "tNWpYIDfNq", "name": "exec', "invalid_response"),
        (200, '{"executions": []}', "invalid_response"),
    ],
)
@responses.activate
def test_failures_are_classified(client, status, body, reason):
    responses.post(SEARCH, status=status, body=body, headers={"Location": "https://elsewhere.example/"})
    with pytest.raises(ApiError) as caught:
        search(client)
    assert caught.value.reason == reason
    assert failure_counts(client) == {reason: 1}
    assert TOKEN not in str(caught.value)
    assert len(responses.calls) == 1  # a redirect is not followed


@responses.activate
def test_error_bodies_are_parsed_into_user_messages(client):
    responses.post(SEARCH, status=401, body=DOCUMENT_ERROR)
    with pytest.raises(ApiError) as caught:
        search(client)
    assert caught.value.messages == ("Error message 1", "Error message 2")
    assert str(caught.value) == "auth: HTTP 401 (Error message 1; Error message 2)"


LONG_TOKEN = "eyJhbGciOiJSUzI1NiJ9." + "".join(random.Random(5).choices(string.ascii_letters + string.digits, k=279))


@pytest.mark.parametrize(
    "echo",
    [LONG_TOKEN, LONG_TOKEN[:150], LONG_TOKEN[-120:], "x" * 150 + LONG_TOKEN],
    ids=["whole", "head", "tail", "cut-at-200"],
)
@pytest.mark.parametrize("status", [400, 401, 500])
@responses.activate
def test_a_token_echoed_in_user_messages_is_masked_before_they_are_shortened(status, echo):
    client = ExecutionManagerClient(Cloud("acme", BASE, LONG_TOKEN), retries=0)
    responses.post(SEARCH, status=status, json=[{"userMessage": f"bad token {echo}"}, {"userMessage": "try again"}])
    responses.post(SEARCH, status=status, json=[{"userMessage": f"bad token {echo}"}])  # the fallback without layout
    with pytest.raises(ApiError) as caught:
        client.search()
    client.close()
    text = str(caught.value)
    assert [LONG_TOKEN[i : i + 16] for i in range(len(LONG_TOKEN) - 15) if LONG_TOKEN[i : i + 16] in text] == []
    assert caught.value.messages[0].startswith("bad token ") and "<redacted>" in caught.value.messages[0]


@pytest.mark.parametrize(
    "exception, reason",
    [
        (requests.exceptions.ReadTimeout("read timed out"), "timeout"),
        (requests.exceptions.ConnectTimeout("connect timed out"), "timeout"),
        (requests.exceptions.ConnectionError("[Errno 111] Connection refused"), "connection"),
        (requests.exceptions.ConnectionError("Failed to resolve: Name or service not known"), "connection"),
        (requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), "connection"),
        (
            requests.exceptions.ChunkedEncodingError("IncompleteRead(10 bytes read, 90 more expected)"),
            "invalid_response",
        ),
    ],
)
@responses.activate
def test_transport_failures_are_classified(client, exception, reason):
    responses.post(SEARCH, body=exception)
    with pytest.raises(ApiError) as caught:
        search(client)
    assert caught.value.reason == reason
    assert failure_counts(client) == {reason: 1}


@responses.activate
def test_body_over_the_cap_is_refused(client):
    responses.post(SEARCH, body="[" + " " * 20_000 + "]")
    with pytest.raises(ApiError, match="exceeds 10000") as caught:
        search(client)
    assert caught.value.reason == "invalid_response"


@responses.activate
def test_layout_rejected_with_400_falls_back_and_remembers(client):
    responses.post(
        SEARCH,
        status=400,
        body=DOCUMENT_ERROR,
        match=[responses.matchers.json_params_matcher({"layout": list(SEARCH_LAYOUT)})],
    )
    responses.post(SEARCH, json=DOCUMENT_ANSWER)
    assert search(client) == DOCUMENT_ANSWER
    assert search(client) == DOCUMENT_ANSWER
    bodies = [call.request.body for call in responses.calls]
    assert json.loads(bodies[0]) == {"layout": list(SEARCH_LAYOUT)}
    assert bodies[1:] == [None, None]  # no body at all, as Perfecto's own tooling calls it
    assert client.use_layout is False


@responses.activate
def test_layout_answer_missing_a_needed_field_falls_back(client):
    without_start = [{k: v for k, v in e.items() if k != "startTime"} for e in DOCUMENT_ANSWER]
    responses.post(
        SEARCH, json=without_start, match=[responses.matchers.json_params_matcher({"layout": list(SEARCH_LAYOUT)})]
    )
    responses.post(SEARCH, json=DOCUMENT_ANSWER)
    assert search(client) == DOCUMENT_ANSWER
    assert client.use_layout is False
    search(client)
    assert len(responses.calls) == 3  # remembered: no layout asked any more


@responses.activate
def test_layout_answer_with_devices_instead_of_platforms_is_accepted(client):
    renamed = [{("devices" if k == "platforms" else k): v for k, v in e.items()} for e in DOCUMENT_ANSWER]
    responses.post(SEARCH, json=renamed)
    assert search(client) == renamed
    assert client.use_layout is True


@responses.activate
def test_stop_sends_the_filter_and_reads_the_answer(client):
    responses.post(STOP, json={"stoppedExecutions": ["a1"], "unStoppedExecutions": ["b2", 3, None]})
    result = client.stop({"fields": {"id": ["a1", "b2"]}})
    assert json.loads(responses.calls[0].request.body) == {"fields": {"id": ["a1", "b2"]}}
    assert (result.stopped, result.not_stopped) == (("a1",), ("b2", "3"))
    assert client.stats.requests.total(endpoint="stop") == 1


@responses.activate
def test_stop_answer_of_the_wrong_shape(client):
    responses.post(STOP, json=["a1"])
    with pytest.raises(ApiError) as caught:
        client.stop({"fields": {"id": ["a1"]}})
    assert caught.value.reason == "invalid_response"
    assert failure_counts(client, "stop") == {"invalid_response": 1}


def test_token_never_in_repr():
    assert TOKEN not in repr(Cloud("acme", BASE, TOKEN))


# -- Smart Reporting and the device list: redirects, echoes (audit of issues 25 and 26) ------------
# These clients call urllib3's pool directly (``responses`` stands in for requests only): a server
# on loopback answers them.


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("page", [1, 2])
def test_a_reporting_redirect_is_not_followed_on_any_page_and_the_token_goes_nowhere_else(status, page):
    from exporter.client import REPORTING_PATH, ReportingClient

    elsewhere = Canned(lambda *_: (200, {}, b'{"resources": []}'))
    first = json.dumps({"resources": [{"id": "r1", "startTime": 1764600000000}], "metadata": {"truncated": True}})

    def answer(method, path, headers):
        if page == 2 and "_page=1" in path:
            return 200, {"Content-Type": "application/json"}, first.encode()
        return status, {"Location": f"{elsewhere.url}/?echo={TOKEN}"}, b""

    app = Canned(answer)
    client = ReportingClient(Cloud("acme", BASE, TOKEN, reporting_url=app.url), retries=0)
    try:
        with pytest.raises(ApiError) as caught:
            client.reports(1764599000, 1764601000)
        assert caught.value.reason == "invalid_response" and TOKEN not in str(caught.value)
        assert [path.split("?")[0] for _, path, _ in app.calls] == [REPORTING_PATH] * page
        assert elsewhere.calls == []
        assert all(headers["PERFECTO_AUTHORIZATION"] == TOKEN for _, _, headers in app.calls)
        assert all("Perfecto-Authorization" not in headers for _, _, headers in app.calls)
    finally:
        client.close()
        app.close()
        elsewhere.close()


@pytest.mark.parametrize("status", [302, 307])
def test_a_device_list_redirect_is_not_followed(status):
    from exporter.client import DeviceClient

    elsewhere = Canned(lambda *_: (200, {}, b'{"handsets": {"handset": []}}'))
    app = Canned(lambda *_: (status, {"Location": elsewhere.url + "/"}, b""))
    client = DeviceClient(Cloud("acme", BASE, TOKEN, devices_url=app.url), retries=0)
    try:
        with pytest.raises(ApiError) as caught:
            client.devices()
        assert caught.value.reason == "invalid_response" and len(app.calls) == 1 and elsewhere.calls == []
        assert app.calls[0][0] == "POST" and app.calls[0][2]["Perfecto-Authorization"] == TOKEN
    finally:
        client.close()
        app.close()
        elsewhere.close()


@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
def test_a_search_answer_that_closes_its_connection_and_drips_ends_at_the_deadline(version):
    """http.client hands the socket of an answer that will close its connection to the answer
    (the connection's ``sock`` is None then): the deadline must still find it."""
    body = b'{"executions": []}'

    def serve(connection, stream, number):
        read_request(stream)
        head = answer_bytes(b"", Content_Length=str(len(body)), Connection="close")
        connection.sendall(head.replace(b"HTTP/1.1", version, 1))
        for byte in body:
            connection.sendall(bytes([byte]))
            time.sleep(0.2)

    server = RawServer(serve)
    client = ExecutionManagerClient(Cloud("acme", server.url, TOKEN), timeout=1.0, retries=0)
    try:
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            client.search()
        assert caught.value.reason == "deadline" and time.monotonic() - started < 1.5
    finally:
        client.close()
        server.close()


def test_search_connects_that_hang_end_within_the_deadline():
    """Two tries of connect_timeout (1 s) would end past the deadline (1.5 s): the second has
    what is left of it."""
    with hanging_port() as port:
        client = ExecutionManagerClient(Cloud("acme", f"http://127.0.0.1:{port}", TOKEN), timeout=1.5,
                                        connect_timeout=1.0, retries=2)
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            client.search()
        client.close()
    assert caught.value.reason == "timeout" and time.monotonic() - started < 1.8


def test_one_watchdog_thread_passes_each_deadline_in_time_and_none_after_its_call():
    """Every call's deadline is kept by one thread: an earlier deadline added after a later one
    still passes in time, and one whose call ended never passes."""
    later = _Deadline(30)
    opened = threading.Event()

    def long_call():
        with later:
            opened.set()
            time.sleep(0.5)

    caller = threading.Thread(target=long_call)
    caller.start()
    opened.wait(5)
    with _Deadline(0.05) as soon:
        time.sleep(0.3)
    with _Deadline(0.05) as finished:
        pass
    time.sleep(0.2)
    caller.join(5)
    assert soon.passed and not finished.passed and not later.passed
    assert [t.name for t in threading.enumerate()].count("deadlines") == 1


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=8))
def test_the_side_calls_query_is_urlencode_byte_for_byte(params):
    from exporter.client import _query

    assert _query(params) == urllib.parse.urlencode(params)
