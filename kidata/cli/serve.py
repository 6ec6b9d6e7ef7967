"""``kidata serve``: a trained run behind openpi's remote-inference protocol (websocket)."""

from __future__ import annotations

import argparse
import os


def add_parser(commands) -> None:
    from kidata.choices import ActionHead, InferencePrecision
    from kidata.config import choices

    serve = commands.add_parser(
        "serve", help="serve a trained run over openpi's websocket protocol (openpi-client works unchanged)",
        epilog="examples:\n  kidata serve --run runs/tiny --port 8000\n"
               "  kidata serve --run runs/libero --keys libero --host 0.0.0.0 --api-key $KEY")
    serve.add_argument("--run", required=True, help="a kidata train run directory")
    serve.add_argument("--checkpoint", help="a checkpoint directory of the run, or its name (step_0000200; default: "
                                           "its latest)")
    serve.add_argument("--keys", default="kidata",
                       help="the clients' observation keys: kidata, libero or droid (openpi's examples), or a JSON map")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--api-key", default=os.environ.get("KIDATA_API_KEY"),
                       help="refuse connections without 'Authorization: Api-Key KEY' (or KIDATA_API_KEY)")
    serve.add_argument("--max-request-mb", type=float, default=64.0, help="larger requests get an error reply")
    serve.add_argument("--num-steps", type=int, default=10, help="flow integration steps (1 or more)")
    serve.add_argument("--device", help="where the model runs: cuda, cuda:1, cpu (default: cuda when present)")
    serve.add_argument("--precision", choices=choices(InferencePrecision), default="float32",
                       help="bfloat16: matmuls and attention in bf16 (autocast), the flow's integration in fp32")
    serve.add_argument("--action-head", choices=choices(ActionHead),
                       help="actions from the flow expert or from greedy FAST tokens (default: the run's [policy] action_head)")
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    from kidata import policy as policies
    from kidata.serving.keymaps import keymap
    from kidata.serving.server import PolicyServer, run_metadata

    keys = keymap(args.keys)  # a bad key map is named before the model loads
    loaded = policies.load(args.run, checkpoint=args.checkpoint, action_head=args.action_head, device=args.device,
                           precision=args.precision, num_steps=args.num_steps)
    server = PolicyServer(loaded, keys, metadata=run_metadata(loaded, args.run), api_key=args.api_key,
                          max_request_bytes=int(args.max_request_mb * 1024 * 1024))
    print(f"serving {args.run} on ws://{args.host}:{args.port} ({loaded.device}, {loaded.precision}; keys: {args.keys}; health: "
          f"http://{args.host}:{args.port}/healthz){' with an API key' if args.api_key else ''}", flush=True)
    try:
        server.serve(args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0
