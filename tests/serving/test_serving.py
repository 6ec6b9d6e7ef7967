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

from support.training import config  # noqa: E402

from kidata import policy as policies  # noqa: E402
from kidata.serving.keymaps import PRESETS, KeyMap, RequestError  # noqa: E402
from kidata.serving.server import PolicyServer, run_metadata  # noqa: E402
from kidata.training.trainer import train  # noqa: E402


@pytest.fixture(scope="module")
def loaded(mixture, tmp_path_factory):
    run = tmp_path_factory.mktemp("serve") / "run"
    train(config(mixture, train={"steps": 2}, eval={"every": 0}), run)
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


# ------------------------------------------------------------------------------ caller inputs are data
def test_non_positive_step_counts_are_refused_by_the_model_the_policy_and_serve(loaded, capsys):
    from kidata.cli import main

    policy, run = loaded
    with pytest.raises(ValueError, match=r"num_steps must be a whole number from 1 to 1000 .* got -3"):
        policies.load(run, num_steps=-3)
    with pytest.raises(ValueError, match=r"num_steps must be a whole number from 1 to 1000 .* got 0"):
        policy.sample_actions(observation(), num_steps=0)
    with pytest.raises(ValueError, match=r"num_steps must be a whole number from 1 to 1000 .* got -1"):
        policy.num_steps = -1
    with pytest.raises(ValueError, match=r"num_steps must be a whole number >= 1 .* got 0"):
        policy.model.sample_actions(policy.batch(observation()), num_steps=0)
    assert main(["serve", "--run", str(run), "--num-steps", "-3", "--port", "0"]) == 2
    assert "num_steps must be a whole number from 1 to 1000" in capsys.readouterr().err
    assert policy.num_steps == 10


BAD_OBSERVATIONS = {
    "a None observation": (None, r"^the observation must be a map with 'images', 'state' and 'prompt', got NoneType$"),
    "images as a list": ({"images": [np.zeros((8, 8, 3), np.uint8)]},
                         r"^images must be a map from camera name to a uint8 \[H, W, 3\] image .* got list"),
    "an empty image": ({"images": {"base_0": np.zeros((0, 0, 3), np.uint8), "base_1": None}},
                       r"^images\['base_0'\] has shape \(0, 0, 3\); height and width must be 1 to 8192 pixels$"),
    "an image of strings": ({"images": {"base_0": "pixels", "base_1": None}},
                            r"^images\['base_0'\] is str; expected a uint8 \[H, W, 3\] RGB image$"),
    "a lone-surrogate prompt": ({"prompt": "pick \ud800 up"},
                                r"^prompt is not valid Unicode text \(surrogates not allowed: '\\ud800' at character 5\)"),
    "a prompt that is a number": ({"prompt": 7}, r"^prompt must be a non-empty string, got 'int'$"),
    "a ragged state": ({"state": [[1.0, 2.0], [3.0]]}, r"^state is not an array \(.*\); expected a real vector \[7\]$"),
    "a complex state": ({"state": np.ones(7, np.complex64)}, r"^state is complex64; expected real numbers"),
    "a boolean state": ({"state": np.ones(7, bool)}, r"^state is bool; expected real numbers"),
    "a NaN state": ({"state": [0, 0, 0, float("nan"), 0, 0, 0]},
                    r"^state must be finite numbers, got NaN or infinite values in \[0.0, 0.0, 0.0, nan"),
    "a state in the wrong units": ({"state": [0, 0, 0, 3e9, 0, 0, 0]}, r"^state reaches 3e\+09, beyond 1e\+06"),
    "a prompt past max_tokens": ({"prompt": "go " * 2000}, r"^prompt: robot sample of \d+ tokens exceeds max_tokens"),
}


@pytest.mark.parametrize("case", BAD_OBSERVATIONS)
def test_an_observation_that_is_not_data_is_refused_in_one_sentence_naming_the_key(loaded, case):
    policy, _ = loaded
    change, message = BAD_OBSERVATIONS[case]
    given = None if change is None else {**observation(), **change}
    with pytest.raises(policies.ObservationError, match=message):
        policy.sample_actions(given)


BAD_NOISE = {
    "the wrong shape": (np.zeros((1, 5, 8), np.float32), r"^noise has shape \[1, 5, 8\]; the model's chunk is \[1, 4, 8\]"),
    "integers": (np.zeros((1, 4, 8), np.int64), r"^noise is torch.int64; expected floating point numbers"),
    "NaN": (np.full((1, 4, 8), np.nan), r"^noise must be finite numbers, got NaN or infinite values$"),
    "a huge value": (np.full((4, 8), 1e6), r"^noise reaches 1e\+06; the flow starts from N\(0, 1\)"),
    "a string": ("noise", r"^noise is str; expected a float array \[1, 4, 8\]$"),
}


@pytest.mark.parametrize("case", BAD_NOISE)
def test_noise_that_is_not_a_finite_chunk_of_the_models_shape_is_refused(loaded, case):
    policy, _ = loaded
    given, message = BAD_NOISE[case]
    with pytest.raises(policies.ObservationError, match=message):
        policy.sample_actions(observation(), noise=given)


def test_noise_of_any_float_dtype_or_layout_becomes_the_models_float32_chunk(loaded, monkeypatch):
    policy, _ = loaded
    expected = policy.sample_actions(observation(), noise=torch.from_numpy(noise()))
    for given in (noise().astype(np.float64), noise()[0], torch.from_numpy(noise()).double()):
        np.testing.assert_array_equal(policy.sample_actions(observation(), noise=given), expected)
    halved = torch.from_numpy(noise()).to(torch.bfloat16)
    received = []
    original = policy.model.sample_actions
    monkeypatch.setattr(policy.model, "sample_actions", lambda batch, **kw: received.append(kw["noise"]) or original(batch, **kw))
    policy.sample_actions(observation(), noise=halved)
    assert (received[0].dtype, received[0].device) == (torch.float32, policy.device)
    assert torch.equal(received[0], halved.float())


def test_a_policy_goes_where_it_is_told_with_every_input_and_defaults_to_cuda_when_present(loaded, monkeypatch):
    from kidata.model.ki_model import KIModel

    policy, run = loaded
    on_meta = policies.Policy(KIModel(policy.config.model), policy.config, policy.manifest, policy.encoder, device="meta")
    assert {p.device.type for p in on_meta.model.parameters()} == {"meta"}
    assert {t.device.type for t in on_meta.batch(observation()).values()} == {"meta"}
    assert policies.load(run, device="cpu").device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert policies.default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert policies.default_device() == "cpu" and policies.load(run).device == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^device 'cuda': this machine has no CUDA device that torch can use"):
        policies.load(run, device="cuda")
    with pytest.raises(ValueError, match=r"^device 'gpu0' is not a device name such as cuda, cuda:1 or cpu"):
        policies.load(run, device="gpu0")


def test_serve_and_eval_hand_their_device_precision_and_steps_to_the_policy(monkeypatch, capsys):
    from kidata.cli import main

    asked = []

    def load(run, **options):
        asked.append(options)
        raise RuntimeError("stop here")

    monkeypatch.setattr(policies, "load", load)
    options = ["--device", "cuda:1", "--precision", "bfloat16", "--num-steps", "7"]
    assert main(["serve", "--run", "r", *options]) == 2
    assert main(["eval", "metaworld", "--run", "r", *options]) == 2
    assert [(o["device"], o["precision"], o["num_steps"]) for o in asked] == [("cuda:1", "bfloat16", 7)] * 2
    assert capsys.readouterr().err.count("stop here") == 2


def test_bfloat16_inference_runs_the_matmuls_in_bf16_and_acts_close_to_float32(loaded):
    policy, run = loaded
    half = policies.load(run, precision="bfloat16")
    outputs = []
    hook = half.model.expert_layers[0].q.register_forward_hook(lambda module, args, out: outputs.append(out.dtype))
    try:
        actions = half.sample_actions(observation(), noise=noise())
    finally:
        hook.remove()
    assert set(outputs) == {torch.bfloat16} and len(outputs) == 10  # one per Euler step
    exact = policy.sample_actions(observation(), noise=noise())
    assert actions.dtype == np.float64 and np.isfinite(actions).all()
    scale = np.asarray(policy.stats.actions.q99) - np.asarray(policy.stats.actions.q01)
    assert np.abs(actions - exact).max() > 0  # bf16 ran for real
    assert (np.abs(actions - exact) <= 0.05 * scale).all()  # within 5% of each dimension's q01..q99 range


def test_a_flipped_byte_in_a_checkpoint_is_refused_by_the_policy_and_by_serve(loaded, tmp_path, capsys):
    import shutil

    from kidata.cli import main
    from kidata.training.checkpoint import CheckpointError

    _, run = loaded
    damaged = tmp_path / "run"
    shutil.copytree(run, damaged)
    checkpoint = sorted((damaged / "checkpoints").glob("step_*"))[-1]
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight: the file keeps its size and still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{checkpoint.name} cannot be used: .*model.safetensors does not "
                                              r"match its sha256 \(damaged\)"):
        policies.load(damaged, checkpoint=checkpoint)
    with pytest.raises(CheckpointError, match=r"holds no complete checkpoint"):
        policies.load(damaged)
    assert main(["serve", "--run", str(damaged), "--checkpoint", str(checkpoint), "--port", "0"]) == 2
    assert "does not match its sha256 (damaged)" in capsys.readouterr().err


def test_the_fast_head_generates_at_most_what_max_tokens_leaves_after_the_prompt(loaded, monkeypatch):
    _, run = loaded
    fast = policies.load(run, action_head="fast")
    budgets = []
    original = fast.model.generate
    monkeypatch.setattr(fast.model, "generate", lambda batch, n, **kw: budgets.append(n) or original(batch, n, **kw))
    fast.sample_actions(observation())
    prompt = fast.batch(observation())["token_mask"].sum()
    assert budgets == [fast.manifest.encoding.max_tokens - int(prompt)]


def array_map(data: bytes, dtype: str, shape: list) -> dict:
    """An array as openpi's msgpack-numpy writes it, with whatever fields a sender chose."""
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


def frame(**changes) -> bytes:
    """A kidata-layout request with ``changes`` (raw msgpack values) in place of its fields."""
    import msgpack

    from kidata.serving.protocol import packb

    good = msgpack.unpackb(packb({**observation(), "noise": noise()}), raw=False)
    return msgpack.packb({**good, **changes})


BAD_FRAMES = {
    "random bytes": (bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)),
                     r"ProtocolError: the message is not (valid msgpack|one msgpack value)"),
    "text": ("hello", r"requests are msgpack-numpy bytes, not text"),
    "a list": (b"\x92\x01\x02", r"a request is a map of observation keys, got list"),
    "an array shorter than its shape": (frame(state=array_map(b"\0" * 8, "<f8", [7])),
                                        r"an array of shape \[7\] and dtype <f8 needs 56 bytes; its data holds 8"),
    "a negative shape": (frame(state=array_map(b"", "<f8", [-7])), r"an array's shape \[-7\] is not a list of"),
    "an object array": (frame(state=array_map(b"\1" * 8, "|O", [1])), r"an array's dtype '\|O' is not a number"),
    "deep nesting": (b"\x91" * 100 + b"\xc0", r"the message nests maps and lists more than 32 deep"),
    "deeper than msgpack's stack": (b"\x91" * 100_000 + b"\xc0", r"nests maps and lists deeper than msgpack's stack"),
    "invalid UTF-8": (b"\x81\xa6prompt\xa2\xff\xfe",
                      r"a string of the message is not valid UTF-8 \(invalid start byte at byte 0\)"),
    "state as text": (frame(state="seven numbers"), r"ObservationError: state is str; expected a real vector \[7\]"),
    "images as a number": (frame(images=3), r"ObservationError: images must be a map from camera name"),
    "noise of the wrong shape": (frame(noise=array_map(b"\0" * 4 * 8, "<f4", [8])),
                                 r"ObservationError: noise has shape \[8\]; the model's chunk is \[1, 4, 8\]"),
}


@pytest.mark.parametrize("case", BAD_FRAMES)
def test_a_malformed_frame_gets_a_reply_naming_the_problem_and_the_server_keeps_serving(server, case):
    from websockets.sync.client import connect as ws_connect

    from kidata.serving.protocol import packb, unpackb

    _, port = server
    message, expected = BAD_FRAMES[case]
    with ws_connect(f"ws://127.0.0.1:{port}", max_size=None, compression=None) as connection:
        connection.recv(timeout=REPLY_TIMEOUT_S)  # the metadata
        connection.send(message)
        reply = connection.recv(timeout=REPLY_TIMEOUT_S)
        assert isinstance(reply, str) and reply.startswith("kidata serve: ") and "\n" not in reply
        assert __import__("re").search(expected, reply), reply
        connection.send(packb(observation()))
        assert unpackb(connection.recv(timeout=REPLY_TIMEOUT_S))["actions"].shape == (4, 7)


def test_a_keys_file_that_is_not_a_json_key_map_is_named(tmp_path, capsys):
    from kidata.cli import main
    from kidata.serving.keymaps import keymap

    broken = tmp_path / "keys.json"
    broken.write_text("{'images': oops")
    with pytest.raises(ValueError, match=rf"^--keys {broken} is not a JSON key map \(.*\); expected \{{"):
        keymap(str(broken))
    listed = tmp_path / "list.json"
    listed.write_text('["observation/image"]')
    with pytest.raises(ValueError, match=rf"^{listed}: a key map has images .* found list$"):
        keymap(str(listed))
    assert main(["serve", "--run", str(tmp_path / "no-run"), "--keys", str(broken)]) == 2
    assert f"--keys {broken} is not a JSON key map" in capsys.readouterr().err


def test_serve_on_a_port_in_use_is_refused_without_first_claiming_to_serve_there(loaded, capsys):
    import socket

    from kidata.cli import main

    _, run = loaded
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--run", str(run), "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Address already in use" in err
