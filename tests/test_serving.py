"""`kidata serve` speaks openpi's protocol: the real openpi-client gets the in-process policy's
actions, bad requests are answered without taking the server down, concurrent clients are served
one inference at a time, and the API key and request cap hold."""

from __future__ import annotations

import concurrent.futures
import functools
import json
import urllib.request

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("websockets", reason="serving needs the 'serve' extra")
pytest.importorskip("tensorflow_datasets", reason="the fixture build reads RLDS")
client_module = pytest.importorskip("openpi_client.websocket_client_policy", reason="the dev install adds openpi-client")

from test_train import config, mixture  # noqa: E402,F401 - the module-scoped build fixture

from kidata import policy as policies  # noqa: E402
from kidata.serving.keymaps import PRESETS, KeyMap, RequestError  # noqa: E402
from kidata.serving.server import PolicyServer, run_metadata  # noqa: E402
from kidata.training.trainer import train  # noqa: E402


@pytest.fixture(scope="module")
def loaded(mixture, tmp_path_factory):  # noqa: F811
    run = tmp_path_factory.mktemp("serve") / "run"
    train(config(mixture, "--train.steps", "2", "--eval.every", "0"), run)
    return policies.load(run), run


@pytest.fixture
def server(loaded):
    policy, run = loaded
    server = PolicyServer(policy, PRESETS["kidata"], metadata=run_metadata(policy, run), max_request_bytes=2_000_000)
    port = server.start("127.0.0.1", 0)
    yield server, port
    stop(server)


OPEN_CLIENTS: list = []  # the clients a test opened, closed by the server fixture
REPLY_TIMEOUT_S = 60  # a reply takes well under a second here: a hang fails this test, naming it


def connect(port: int, **options) -> "client_module.WebsocketClientPolicy":
    """openpi's client (it waits for replies forever) with every reply awaited at most
    REPLY_TIMEOUT_S, so a stuck exchange raises TimeoutError in the test that made it instead of
    stalling the suite."""
    client = client_module.WebsocketClientPolicy("127.0.0.1", port, **options)
    client._ws.recv = functools.partial(client._ws.recv, timeout=REPLY_TIMEOUT_S)
    OPEN_CLIENTS.append(client)
    return client


def stop(server: PolicyServer) -> None:
    """Closes the clients the test opened, then the server: shutdown then has no live connection
    to wind down."""
    for client in OPEN_CLIENTS:
        client._ws.close()
    OPEN_CLIENTS.clear()
    server.shutdown()


def observation(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"images": {"base_0": rng.integers(0, 255, (64, 80, 3), dtype=np.uint8),
                       "base_1": rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)},
            "state": rng.normal(size=7), "prompt": "put the spoon in the pot"}


def noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, 4, 8)).astype(np.float32)


def test_openpi_client_gets_the_in_process_actions(loaded, server):
    policy, _ = loaded
    _, port = server
    client = connect(port)
    metadata = client.get_server_metadata()
    assert (metadata["server"], metadata["action_horizon"], metadata["cameras"]) == ("kidata", 4, ["base_0", "base_1"])
    reply = client.infer({**observation(), "noise": noise()})
    expected = policy.sample_actions(observation(), noise=torch.from_numpy(noise()))
    np.testing.assert_array_equal(reply["actions"], expected)
    assert reply["actions"].shape == (4, 7) and reply["server_timing"]["infer_ms"] > 0


def test_a_bad_request_gets_an_error_naming_it_and_the_server_keeps_serving(server):
    _, port = server
    client = connect(port)
    with pytest.raises(RuntimeError, match=r"request lacks \['prompt'\]"):
        client.infer({"images": observation()["images"], "state": np.zeros(7)})
    with pytest.raises(RuntimeError, match=r"ObservationError: images\['base_0'\]"):
        client.infer({**observation(), "images": {"base_0": np.zeros((8, 8), np.uint8), "base_1": None}})
    assert client.infer(observation())["actions"].shape == (4, 7)


def test_a_request_over_the_cap_is_refused_by_the_websocket_layer_and_the_server_serves_on(server):
    from websockets.exceptions import ConnectionClosedError

    _, port = server
    client = connect(port)
    big = {**observation(), "images": {"base_0": np.zeros((1000, 1000, 3), np.uint8), "base_1": None}}
    with pytest.raises(ConnectionClosedError) as closed:
        client.infer(big)
    assert closed.value.rcvd.code == 1009 and "exceeds limit of 2000000 bytes" in closed.value.rcvd.reason
    assert connect(port).infer(observation())["actions"].shape == (4, 7)


def test_concurrent_clients_are_each_answered_as_if_alone(loaded, server):
    policy, _ = loaded
    _, port = server

    def ask(seed: int) -> np.ndarray:
        client = connect(port)
        return [client.infer({**observation(seed), "noise": noise(seed)})["actions"] for _ in range(3)]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    for seed, replies in enumerate(answers):
        expected = policy.sample_actions(observation(seed), noise=torch.from_numpy(noise(seed)))
        for reply in replies:
            np.testing.assert_array_equal(reply, expected)


def test_an_api_key_is_required_when_set_and_health_is_open(loaded):
    policy, run = loaded
    server = PolicyServer(policy, PRESETS["kidata"], metadata=run_metadata(policy, run), api_key="s3cret")
    port = server.start("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200 and response.read() == b"OK\n"
        with pytest.raises(Exception, match="401"):
            connect(port)
        client = connect(port, api_key="s3cret")
        assert client.infer(observation())["actions"].shape == (4, 7)
    finally:
        stop(server)


def test_openpi_example_layouts_map_onto_the_runs_cameras_and_state():
    libero = PRESETS["libero"].observation({"observation/image": 1, "observation/wrist_image": 2,
                                            "observation/state": np.arange(8.0), "prompt": b"open the drawer"})
    assert libero["images"] == {"base_0": 1, "left_wrist_0": 2} and libero["prompt"] == "open the drawer"
    droid = PRESETS["droid"].observation({"observation/exterior_image_1_left": 1, "observation/wrist_image_left": 2,
                                          "observation/joint_position": np.arange(7.0),
                                          "observation/gripper_position": [0.5], "prompt": "wipe"})
    np.testing.assert_array_equal(droid["state"], [0, 1, 2, 3, 4, 5, 6, 0.5])
    with pytest.raises(RequestError, match=r"request lacks \['observation/wrist_image'\]"):
        PRESETS["libero"].observation({"observation/image": 1, "observation/state": [0.0], "prompt": "x"})
    assert json.dumps(KeyMap().describe())


def test_the_evaluators_remote_policy_gets_the_same_actions(loaded, server):
    from kidata.serving.client import RemotePolicy

    policy, _ = loaded
    _, port = server
    remote = RemotePolicy(f"ws://127.0.0.1:{port}")
    np.testing.assert_array_equal(remote.sample_actions(observation(1), noise=noise(1)),
                                  policy.sample_actions(observation(1), noise=torch.from_numpy(noise(1))))
    assert remote.metadata["source"] == "bridge"
    remote.close()


def test_the_evaluators_remote_policy_names_a_server_that_never_replies(loaded):
    from kidata.serving.client import RemotePolicy

    policy, run = loaded

    class Stuck:  # a policy whose inference never ends (until the test lets it go)
        release = __import__("threading").Event()

        def sample_actions(self, observation, noise=None):
            self.release.wait(30)
            return policy.sample_actions(observation, noise=noise)

    server = PolicyServer(Stuck(), PRESETS["kidata"], metadata=run_metadata(policy, run))
    port = server.start("127.0.0.1", 0)
    remote = RemotePolicy(f"ws://127.0.0.1:{port}", timeout_s=0.5)
    try:
        with pytest.raises(TimeoutError, match=rf"ws://127.0.0.1:{port} sent no reply within 0.5 s"):
            remote.sample_actions(observation(1), noise=noise(1))
    finally:
        Stuck.release.set()
        remote.close()
        server.shutdown()
