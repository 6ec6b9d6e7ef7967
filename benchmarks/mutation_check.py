"""Plants known bugs, one at a time, in a scratch copy of the checkout and reports which the test
suite catches: the suite's own test. A developer tool (``make mutate``), not part of ``make test``.

    python benchmarks/mutation_check.py [--only NAME ...] [--list]

Each mutation names the file, the exact text it replaces (it must occur exactly once, so a
refactor that moves the code makes the check fail loudly instead of passing vacuously) and the
tests that must fail. "caught" means those tests fail with the bug in place; every mutation in
the list must be caught. The scratch copy is imported through PYTHONPATH ahead of the editable
install, and a sanity run without any mutation must pass first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids or -k expressions as "file::name" / "file -k expr"


OBJ = "tests/model/test_objectives.py"
MUTATIONS = [
    # objectives
    Mutation("token loss mask off by one", "kidata/model/ki_model.py",
             'batch["loss"][:, 1:]', 'batch["loss"][:, :-1]', (OBJ,)),
    Mutation("token loss without the shift", "kidata/model/ki_model.py",
             "hidden = text_hidden[:, :-1].reshape(", "hidden = text_hidden[:, 1:].reshape(",
             (OBJ,)),
    Mutation("flow target sign flipped", "kidata/model/ki_model.py",
             "(velocity - (noise - actions))", "(velocity - (actions - noise))", (OBJ,)),
    Mutation("x_t mixes actions and noise the wrong way round", "kidata/model/ki_model.py",
             "noisy = t[:, None, None] * noise + (1 - t[:, None, None]) * actions",
             "noisy = t[:, None, None] * actions + (1 - t[:, None, None]) * noise", (OBJ,)),
    Mutation("flow time uniform instead of Beta(1.5, 1)", "kidata/model/ki_model.py",
             "uniform.pow(1 / 1.5) * 0.999", "uniform * 0.999", (OBJ,)),
    Mutation("time embedding halves swapped", "kidata/model/layers.py",
             "[angle.sin(), angle.cos()]", "[angle.cos(), angle.sin()]", (OBJ,)),
    # memory and precision of a step
    Mutation("LM head over every text position", "kidata/model/ki_model.py",
             "self.lm_head(self.final_norm(hidden))  # [N, V]",
             "self.lm_head(self.final_norm(text_hidden))[:, :-1].flatten(0, 1).index_select(0, index)  # [N, V]",
             ("tests/model/test_attention_memory.py -k lm_head_runs_only",)),
    Mutation("keys and values copied once per query head", "kidata/model/attention.py",
             "q, k.expand(shape), v.expand(shape)", "q, k.repeat_interleave(heads, 1), v.repeat_interleave(heads, 1)",
             ("tests/model/test_attention_memory.py -k without_a_copy",)),
    Mutation("AdaRMSNorm variance in the input's dtype", "kidata/model/layers.py",
             "wide = x.float()", "wide = x", ("tests/model/test_adarms_precision.py",)),
    # inference
    Mutation("expert positions at inference differ from training", "kidata/model/ki_model.py",
             "positions = self._expert_positions(prefix_visible, h.shape[1])\n",
             "positions = self._expert_positions(prefix_visible, h.shape[1]) + 1\n", (OBJ,)),
    Mutation("Euler step in the wrong direction", "kidata/model/ki_model.py",
             "x = x + dt * self.run_expert", "x = x - dt * self.run_expert", (OBJ,)),
    Mutation("generation ignores stop ids", "kidata/model/ki_model.py",
             "done |= torch.isin(token, stop)", "done |= False", (OBJ,)),
    Mutation("generation does not advance positions", "kidata/model/ki_model.py",
             "position = position + 1\n", "position = position\n", (OBJ,)),
    Mutation("generation attends to padding", "kidata/model/ki_model.py",
             "visible = valid.clone()", "visible = torch.ones_like(valid)", (OBJ,)),
    Mutation("generation runs its whole budget after every row stopped", "kidata/model/ki_model.py",
             "if step + 1 == max_new_tokens or bool(done.all()):", "if step + 1 == max_new_tokens:",
             ("tests/model/test_ki_model.py::test_generation_that_every_row_stops_at_once_runs_no_decoder_pass_after_the_prefix",)),
    Mutation("a named checkpoint is used without checking its checksums", "kidata/training/checkpoint.py",
             'if (path / "model.safetensors").is_file() or is_sharded(path):', "if False:",
             ("tests/serving/test_serving.py::test_a_flipped_byte_in_a_checkpoint_is_refused_by_the_policy_and_by_serve",)),
    Mutation("the server decodes object arrays from a request's bytes", "kidata/serving/protocol.py",
             'dtype.kind not in "biuf"', 'dtype.kind not in "biufO"',
             ("tests/serving/test_serving.py -k malformed_frame",)),
    # data
    Mutation("holdout fraction inverted", "kidata/hashing.py",
             'stable_fraction("holdout", source, record_id) < fraction',
             'stable_fraction("holdout", source, record_id) < 1 - fraction', ("tests/pipelines/test_build.py -k holdout",)),
    Mutation("a source's own holdout ignored", "kidata/pipelines/encode_pass.py",
             "holdout = source_config.holdout if source_config.holdout is not None else mixture.holdout",
             "holdout = mixture.holdout", ("tests/pipelines/test_build.py -k holdout",)),
    Mutation("a constant dimension passes through unnormalized", "kidata/normalize.py",
             "        return (values - low) / (high - low + EPSILON) * 2.0 - 1.0",
             "        return np.where(high - low > 1e-8, (values - low) / (high - low + EPSILON) * 2.0 - 1.0, values)",
             ("tests/pipelines/test_stats.py -k constant_joint",)),
    Mutation("balance ignored", "kidata/loader/mixture.py",
             "(sum(c for _, c in shards) if settings.balance else 1.0)", "1.0", ("tests/loader/test_mixture.py -k balance",)),
    Mutation("a rerun redoes finished units", "kidata/pipelines/build.py",
             "            if fs.exists(record_path):", "            if False and fs.exists(record_path):",
             ("tests/pipelines/test_build.py -k killed",)),
    Mutation("verify never compares hashes", "kidata/pipelines/verify.py",
             "if digest != shard.sha256:", "if False:", ("tests/pipelines/test_build.py -k verify",)),
    Mutation("the engine's retry removed", "kidata/pipelines/engine.py",
             "for attempt in (1, 2):", "for attempt in (2,):", ("tests/pipelines/test_engine.py",)),
    Mutation("--force removes a user's files", "kidata/pipelines/ownership.py",
             "    if foreign:\n        shown", "    if False:\n        shown",
             ("tests/pipelines/test_faults_build.py -k force_refuses",)),
    Mutation("a second build ignores the lock", "kidata/pipelines/ownership.py",
             "os.O_CREAT | os.O_EXCL | os.O_WRONLY", "os.O_CREAT | os.O_WRONLY",
             ("tests/pipelines/test_faults_build.py -k live_build",)),
    Mutation("verify ignores which build a shard belongs to", "kidata/pipelines/verify.py",
             "                if found != build_id:", "                if False:",
             ("tests/pipelines/test_faults_build.py -k shard_of_another_build",)),
    Mutation("a build's workers outlive a coordinator killed with SIGKILL", "kidata/pipelines/engine.py",
             "    while os.getppid() == parent:", "    while True:",
             ("tests/pipelines/test_faults_build.py -k stopped_two_worker",)),
    Mutation("a resume onto another mixture is not checked", "kidata/training/trainer.py",
             "        check_same_mixture(before, manifest, run.manifest_file)", "        pass",
             ("tests/training/test_faults.py -k another_mixture",)),
    Mutation("a corrupt shard image is fed as garbage", "kidata/loader/mixture.py",
             'colorspace="RGB", strict=True)', 'colorspace="RGB", strict=False)',
             ("tests/pipelines/test_faults_build.py -k does_not_decode",)),
    Mutation("a source's own holdout is not range-checked", "kidata/pipelines/recipe.py",
             '        check_number(f"{where}: ", "holdout"', '        (lambda *a: None)(f"{where}: ", "holdout"',
             ("tests/pipelines/test_recipe_limits.py -k own_holdout",)),
    Mutation("fit = false in a recipe fits FAST anyway", "kidata/pipelines/recipe.py",
             "if isinstance(setting, FastFit) and setting.fit is False:", "if False:",
             ("tests/pipelines/test_recipe_types.py -k fit_false",)),
    Mutation("a manifest's fast_tokenizer of another type is read as is", "kidata/recipe.py",
             "            elif not isinstance(setting, str) and", "            elif False and",
             ("tests/test_recorded_recipe.py -k fast_tokenizer_was_edited",)),
    Mutation("verify passes a recipe edited in the manifest", "kidata/pipelines/verify.py",
             "    if actual == manifest.recipe_sha256:", "    if True:",
             ("tests/pipelines/test_faults_build.py -k edited_in_the_manifest",)),
    Mutation("Bridge gripper inverted", "kidata/sources/datasets/oxe.py",
             '"bridge_dataset",  # Berkeley BridgeData V2 as released in RLDS (image_0..3, 7-d state/action)\n'
             '        cameras={"base_0": "image_0", "base_1": "image_1", "left_wrist_0": "image_3"},\n'
             '        blank_cameras_absent=True,\n        state=["observation/state"],\n'
             '        action=["action[:6]", "action[6:7]"],',
             '"bridge_dataset",  # Berkeley BridgeData V2 as released in RLDS (image_0..3, 7-d state/action)\n'
             '        cameras={"base_0": "image_0", "base_1": "image_1", "left_wrist_0": "image_3"},\n'
             '        blank_cameras_absent=True,\n        state=["observation/state"],\n'
             '        action=["action[:6]", "action[6:7]|close_to_open"],',
             ("tests/sources/test_rlds_bridge.py -k raw",)),
    # training
    Mutation("EMA weighted the wrong way", "kidata/training/trainer.py",
             "for p in sources], 1 - config.optim.ema_decay)", "for p in sources], config.optim.ema_decay)",
             ("tests/training/test_train.py -k ema",)),
    Mutation("gradient accumulation sums instead of averaging", "kidata/training/trainer.py",
             '(out["loss"] / micro_batches).backward()', 'out["loss"].backward()',
             ("tests/training/test_train.py -k accumulation",)),
    Mutation("flow noise keyed by the process instead of the data stream", "kidata/training/trainer.py",
             "flow_inputs(config.train.seed, stream, step", "flow_inputs(config.train.seed, env.rank, step",
             ("tests/training/test_train.py -k one_process_trains_as_two",)),
    Mutation("a resumed stream starts over instead of at its position", "kidata/training/streams.py",
             "states[stream] if states is not None else None", "None",
             ("tests/training/test_train.py -k resumes_on_one_to",)),
    Mutation("pruning keeps one too many", "kidata/training/checkpoint.py",
             '.endswith(".tmp"))[:-keep]', '.endswith(".tmp"))[:-keep - 1]', ("tests/training/test_train.py -k pruning",)),
    Mutation("resume on a rebuilt mixture not checked", "kidata/training/trainer.py",
             "        manifest.check_expectations({", "        (lambda expect: None)({", ("tests/training/test_train.py -k rebuilt",)),
    Mutation("the policy acts on a subtask source without generating the subtask", "kidata/policy/robot_policy.py",
             "        self.generates_subtask = bool(subtask)", "        self.generates_subtask = False",
             ("tests/policy/test_subtask_parity.py -k generates_the_subtask_then_acts",)),
    Mutation("the expert's context ends at the prefix on subtask rows", "kidata/loader/collate.py",
             'expert_context[row] = expert_context_length(sample["meta"])',
             'expert_context[row] = sample["meta"]["prefix_length"]',
             ("tests/policy/test_subtask_parity.py -k trained_on_the_subtask_text",)),
    Mutation("policy unnormalizes actions with the state statistics", "kidata/policy/robot_policy.py",
             "self.stats.actions, self.normalization)", "self.stats.state, self.normalization)",
             ("tests/training/test_train.py -k policy_maps",)),
    Mutation("DDP wrapping dropped (gradients never synchronised)", "kidata/training/parallelize.py",
             "wrapped = torch.nn.parallel.DistributedDataParallel(\n            model,",
             "wrapped = (lambda module, **_: module)(\n            model,", ("tests/training/test_train.py -k ddp_keeps",)),
    Mutation("FSDP wrapping dropped (parameters not sharded)", "kidata/training/parallelize.py",
             "wrapped = shard_per_block(model, bf16=bf16)", "wrapped = model", ("tests/training/test_train.py -k fsdp_shards",)),
    Mutation("accumulated gradients averaged on the first micro-batch instead of the last",
             "kidata/training/trainer.py", "gradient_sync(wrapped, last=index == micro_batches - 1)",
             "gradient_sync(wrapped, last=index == 0)",
             ("tests/training/test_train.py -k accumulating",)),
    Mutation("FSDP2 reduce-scatters every micro-batch of an accumulated step", "kidata/training/parallelize.py",
             'if hasattr(wrapped, "set_requires_gradient_sync"):', "if False:",
             ("tests/training/test_fsdp.py -k reduces_each_unit",)),
    Mutation("FSDP2 bf16 casts the root's inputs (the flow time on the bf16 grid)", "kidata/training/parallelize.py",
             "cast_forward_inputs=False)", "cast_forward_inputs=True)", ("tests/training/test_fsdp.py -k fp32",)),
    Mutation("delta actions: the policy never adds the state back", "kidata/policy/robot_policy.py",
             "actions = to_absolute(actions, np.asarray(observation[\"state\"], dtype=np.float64), self.delta_mask)",
             "actions = actions", ("tests/test_delta_actions.py -k policy_returns",)),
    Mutation("delta actions: shards hold the absolute chunks", "kidata/pipelines/encode_pass.py",
             "episode_delta_chunks(episode.state, episode.actions, horizon, mask)",
             "episode_delta_chunks(episode.state, episode.actions, horizon, mask & False)",
             ("tests/test_delta_actions.py -k samples_hold",)),
    Mutation("delta actions: statistics of the absolute actions", "kidata/pipelines/stats.py",
             "self.add(state, chunks[valid])", "self.add(state, actions)",
             ("tests/test_delta_actions.py -k statistics",)),
    # OXE conformance
    Mutation("keys containing '/' split on every slash", "kidata/sources/rlds.py",
             "for size in range(len(parts), 0, -1):", "for size in (1,):", ("tests/sources/test_oxe_conformance.py",)),
    Mutation("cmu_stretch's gripper read from the terminate flag", "kidata/sources/datasets/oxe.py",
             '"action[6:7]"],  # [3 position', '"action[7:8]"],  # [3 position', ("tests/sources/test_oxe_conformance.py",)),
    Mutation("relative gripper always starts open", "kidata/sources/spec.py",
             "current = 1.0 - given[0] if len(given) else 1.0", "current = 1.0", ("tests/sources/test_oxe_conformance.py",)),
    # serving and interop
    Mutation("a bad request takes the connection down", "kidata/serving/server.py",
             '            return f"kidata serve: {type(error).__name__}: {error}"', "            raise",
             ("tests/serving/test_serving.py",)),
    Mutation("the AutoProcessor module's DCT not orthonormal", "kidata/tokenizers/hf_processor.py",
             'dct(chunk, axis=0, norm="ortho")', "dct(chunk, axis=0)", ("tests/tokenizers/test_fast_interop.py",)),
    Mutation("the AutoProcessor module clips only below the fitted range", "kidata/tokenizers/hf_processor.py",
             "codes = np.clip(rounded, self.min_token, self.max_token) - self.min_token",
             "codes = np.maximum(rounded - self.min_token, 0)",
             ("tests/tokenizers/test_fast_interop.py -k past_the_fitted_range",)),
    # diagnostics
    Mutation("training layouts include the held-out episodes", "kidata/eval/metaworld.py",
             "if not in_holdout(config.name, episode_id(task, opened.seed, index), holdout) and",
             "if True and", ("tests/eval/test_metaworld_diagnostics.py -k training_layouts",)),
    Mutation("the expert does not stand in for an invalid FAST chunk", "kidata/policy/robot_policy.py",
             "                    normalized = self._flow_actions(batch, steps, noise)", "                    pass",
             ("tests/eval/test_metaworld_diagnostics.py -k fallback_is_flow",)),
    Mutation("policy.load ignores the run's [policy] action head", "kidata/policy/robot_policy.py",
             "        head = self.settings.action_head", '        head = "auto"',
             ("tests/eval/test_metaworld_diagnostics.py -k policy_table_chooses",)),
    Mutation("a mistyped checkpoint path reaches load_state_dict", "kidata/training/checkpoint.py",
             "    if tensors is None:\n        raise FileNotFoundError", "    if False:\n        raise FileNotFoundError",
             ("tests/training/test_train.py -k checkpoint_path_that_is_not",)),
    Mutation("the evaluator ignores the replanning a policy carries", "kidata/eval/metaworld.py",
             "    chunking = Chunking.of(policy) if chunking is None else chunking",
             "    chunking = Chunking() if chunking is None else chunking",
             ("tests/eval/test_metaworld_diagnostics.py -k run_settings_say",)),
    # the layers (imports run one way, lazy ones counted)
    Mutation("training imports the evaluators inside a function", "kidata/training/closed_loop.py",
             "    if config.eval.metaworld and closed_loop is None:",
             "    from kidata.eval.during_training import closed_loop_hook  # noqa: F401\n"
             "    if config.eval.metaworld and closed_loop is None:",
             ("tests/project/test_architecture.py -k every_import",)),
    Mutation("the comparison's runs import its summary inside a function", "kidata/compare/runs.py",
             "    from kidata.training.trainer import train\n",
             "    from kidata.compare.summary import report  # noqa: F401\n    from kidata.training.trainer import train\n",
             ("tests/project/test_architecture.py -k circles",)),
    Mutation("a closed-loop evaluation the mixture cannot run is found only after training", "kidata/training/trainer.py",
             "    check_hook(config, closed_loop, manifest)", "    check_hook(config, closed_loop)",
             ("tests/eval/test_during_training.py -k without_a_metaworld_source",)),
    Mutation("a resume without the run's copy of its manifest skips the mixture check", "kidata/training/resume.py",
             "    if not run.manifest_file.is_file():  # else", "    if False:  # else",
             ("tests/training/test_faults.py -k manifest_is_gone",)),
    Mutation("a checkpoint of a run on another mixture acts with this run's statistics", "kidata/policy/from_run.py",
             "    if theirs.recipe_sha256 != manifest.recipe_sha256:", "    if False:",
             ("tests/training/test_faults.py -k another_mixture_is_refused_though",)),
    # CI
    Mutation("CI=1 not treated as CI", "tests/ci_strict.py",
             '("1", "true", "yes", "on")', '("true",)', ("tests/project/test_ci_strict.py",)),
    Mutation("CIDEr-D without clipping the candidate's n-gram weights", "kidata/training/cider.py",
             "min(w, theirs[n].get(g, 0.0)) * theirs[n].get(g, 0.0)", "w * theirs[n].get(g, 0.0)",
             ("tests/training/test_retention.py",)),
    Mutation("a fresh run appends to a killed attempt's metrics", "kidata/training/trainer.py",
             "            drop_unfinished_attempt(run)", "            pass", ("tests/training/test_train.py -k earlier_attempt",)),
    # pretrained checkpoints (issue 43, items 1 and 4)
    Mutation("an openpi checkpoint's tied embedding read only from embed_tokens", "kidata/model/weights.py",
             "heads = [key for key in tensors if _TIED_HEAD.fullmatch(key)]", "heads = []",
             ("tests/model/test_openpi_checkpoints.py -k saved_by_safetensors",)),
    Mutation("any larger pretrained embedding cut to the model's vocabulary", "kidata/model/weights.py",
             "if (tensor.shape[0], rows) != (HUB_EMBEDDING_ROWS, PALIGEMMA_VOCAB):", "if tensor.shape[0] < rows:",
             ("tests/model/test_openpi_checkpoints.py -k embedding_cut_to_another",)),
    Mutation("a pretrained init accepted on any text tokenizer", "kidata/training/initialize.py",
             "if not train.init_from or train.init_format not in PRETRAINED_FORMATS:", "if True:",
             ("tests/training/test_train.py -k pretrained_init_on_a_mixture",)),
    Mutation("the PaliGemma tokenizer fingerprint ignores the <loc>/<seg> layout", "kidata/tokenizers/text.py",
             "if tokenizer.loc_range() != loc or tokenizer.seg_range() != seg:", "if False:",
             ("tests/model/test_openpi_checkpoints.py -k another_layout",)),
    # checkpoints at scale (issue 43, item 13)
    Mutation("every FSDP rank builds the whole model", "kidata/training/initialize.py",
             "initialized = initialized_model(config) if dist.get_rank() == 0 else None",
             "initialized = initialized_model(config)", ("tests/training/test_sharded_checkpoints.py -k only_rank_0",)),
    Mutation("rank 0 hashes every shard again", "kidata/training/checkpoint.py",
             "known.get(name) or file_checksum(p)", "file_checksum(p)",
             ("tests/training/test_sharded_checkpoints.py -k hashes_the_shards",)),
    Mutation("a whole-file checkpoint part read with the files beside it", "kidata/training/checkpoint.py",
             "    reader.fs.ls = lambda _folder: [str(file)]\n", "",
             ("tests/training/test_sharded_checkpoints.py -k resume_reads",)),
    # LoRA
    Mutation("merged LoRA weights transposed", "kidata/model/lora.py",
             "(lora_b.float() @ lora_a.float())", "(lora_b.float() @ lora_a.float()).T",
             ("tests/model/test_lora.py -k merge",)),
    Mutation("FSDP ranks disagree on which LoRA-run parameters train", "kidata/training/initialize.py",
             "parameter.requires_grad_(name in trained[0])",
             "parameter.requires_grad_(name in trained[0] if dist.get_rank() == 0 else parameter.requires_grad)",
             ("tests/training/test_lora_training.py -k two_process_fsdp_lora",)),
    Mutation("a bf16 base merges into bf16 weights", "kidata/model/lora.py",
             ".to(torch.promote_types(weight.dtype, lora_a.dtype))", ".to(weight.dtype)",
             ("tests/model/test_lora.py -k bf16_base",)),
    Mutation("trained linear weights stored in bf16 too", "kidata/model/lora.py",
             "if parameter is not None and not parameter.requires_grad and", "if parameter is not None and",
             ("tests/model/test_lora.py -k stored_in_bf16",)),
    # one config API
    Mutation("a choice field's value is not checked as a string", "kidata/config.py",
             "annotation=literal.get(key),", "annotation=None,",
             ("tests/test_config.py -k choice_field_takes_a_string",)),
    Mutation("a Python caller's override mistake is named as the preset file's", "kidata/training/config.py",
             '        from_table(sections[section], values, where, section=f"{flag}{section}.", fields_only=True)\n', "",
             ("tests/test_config.py -k mistake_in_python_overrides",)),
]


def run_tests(root: Path, tests: tuple[str, ...]) -> tuple[bool, float]:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'tests'}", "CI": "", "OMP_NUM_THREADS": "1"}
    began = time.perf_counter()
    ok = True
    for spec in tests:
        args = spec.split()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args],
                                cwd=root, env=env, capture_output=True, text=True)
        ok = ok and result.returncode == 0
        if result.returncode and os.environ.get("MUTATION_CHECK_VERBOSE"):
            print(f"--- {spec} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return ok, time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="run only the mutations whose name contains one of these")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or any(word in m.name for word in args.only)]
    if args.list:
        for mutation in chosen:
            print(f"{mutation.name:60s} {mutation.path}")
        return 0
    with tempfile.TemporaryDirectory(prefix="kidata-mutants-") as scratch:
        root = Path(scratch) / "kidata-checkout"
        shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__",
                                                                    "demo-out", ".pytest_cache", ".ruff_cache"))
        (root.parent / "shared").symlink_to(REPO.parent / "shared")  # tests read ../shared in place
        probe = subprocess.run([sys.executable, "-c", "import kidata; print(kidata.__file__)"], capture_output=True, cwd=root,
                               text=True, env={**os.environ, "PYTHONPATH": str(root)})
        assert probe.stdout.strip().startswith(str(root)), f"the scratch copy is not the one imported: {probe.stdout}"
        every_test = tuple(sorted({spec for m in chosen for spec in m.tests}))
        clean, seconds = run_tests(root, every_test)
        print(f"unmutated: {'pass' if clean else 'FAIL'} ({seconds:.0f} s)")
        if not clean:
            print("the tests fail without any mutation: fix them first (MUTATION_CHECK_VERBOSE=1 shows why)")
            return 2
        missed = []
        for mutation in chosen:
            path = root / mutation.path
            original = path.read_text()
            if original.count(mutation.old) != 1:
                print(f"{mutation.name}: the text to replace occurs {original.count(mutation.old)} times in "
                      f"{mutation.path}; update the mutation")
                missed.append(mutation.name)
                continue
            path.write_text(original.replace(mutation.old, mutation.new))
            try:
                passed, seconds = run_tests(root, mutation.tests)
            finally:
                path.write_text(original)
            print(f"{'MISSED' if passed else 'caught'}  {mutation.name} ({seconds:.0f} s)", flush=True)
            if passed:
                missed.append(mutation.name)
        print(f"{len(chosen) - len(missed)} of {len(chosen)} planted bugs caught")
        return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
