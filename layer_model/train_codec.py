"""Training a latent transparency codec, and its command line: `python -m layer_model.train_codec` (codec_cli.py).

`train_codec` runs a whole run: it refuses a saved state of another run under the same output name (so a
long run is never overwritten by a mistake), resumes a run of the same settings, trains, measures the codec
on held-out images and writes the codec file with its description. Under torchrun every process calls it
with the same arguments; rank 0 alone writes.
"""

from __future__ import annotations

import os

import torch

from . import codec_cli
from ._common import host_path, training
from .codec_training import CodecFit, CodecReport, CodecTrainConfig, FrozenVAE, check_config
from .rgba_dataset import RGBAFolder
from .trained_codec import CodecInfo, save_codec
from .transparent_codec import CodecLayout

distributed, loop = training.distributed, training.loop


class OtherRunError(ValueError):
    """The output name holds the saved state of a run with other settings, data or VAE."""


def train_codec(vae: FrozenVAE, vae_signature: str, latent_format: str, dataset: RGBAFolder,
                config: CodecTrainConfig, output: str, layout: CodecLayout, *,
                initial: tuple[dict, dict] | None = None, on_step: loop.ProgressCallback | None = None,
                processes: distributed.Processes = distributed.SINGLE, require_resume: bool = False) -> CodecReport:
    """Train the codec of `layout` for `vae` (whose latents are `latent_format`'s) and save it to `output`.

    `vae_signature` identifies the VAE's weights: a saved state resumes only with the same VAE. `initial`:
    (encoder, decoder) state dicts to fine-tune, with `layout` the published one they belong to."""
    check_config(config, processes)
    check_output(output)
    fit = CodecFit.start(vae, dataset, config, layout, processes, initial)
    model = {"latent_format": latent_format, "vae": vae_signature, "channels": str(layout.latent_channels),
             "downscale": str(layout.downscale), "alpha_first": str(layout.alpha_first),
             "decoder_channels": ",".join(map(str, layout.decoder_channels))}
    fingerprint = training.fingerprint.run_fingerprint(dataset.fingerprint(), config, model)
    state_path = training.state.path_for(output)
    refusal = refusal_to_resume(state_path, fingerprint, require_resume) if processes.is_main else None
    refusal = distributed.from_main(refusal, processes)
    if refusal:
        raise OtherRunError(refusal)
    run = loop.Loop(config.steps, config.save_every, state_path, fingerprint, fit.parts(), processes)
    run_report = run.resume()
    if not run_report.resumed_from:
        fit.measure_latents()
    fit.wrap()
    run_report = run.run(fit.step, on_step)
    report = CodecReport(run_report, fit.history.terms, fit.history.offset_scale)
    if processes.is_main:
        report.validation = fit.validate()
        info = CodecInfo(latent_format, layout.latent_channels, layout.downscale, fit.history.offset_scale,
                         layout.alpha_first, layout.decoder_channels, steps=config.steps,
                         data=dataset.fingerprint()[:16], init=config.init,
                         losses=report.recent(), validation=report.validation.metrics() if report.validation else {})
        save_codec(output, fit.pair.encoder, fit.pair.decoder, info)
    return report


def check_output(output: str) -> None:
    """Refuse an output the run could not write, before anything is trained."""
    folder = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise ValueError(f"Cannot create the folder for the codec file {output!r} ({err.strerror}): choose "
                         "another output.") from err
    if not os.access(folder, os.W_OK) or (os.path.exists(output) and not os.access(output, os.W_OK)):
        raise ValueError(f"Cannot write the codec file {output!r}: its folder or the file is not writable. "
                         "Choose another output or fix the permissions.")


def refusal_to_resume(state_path: str, fingerprint: dict, require_resume: bool) -> str | None:
    """Why the run may not start: another run's state under this name, or no state where a resume was asked."""
    differences = training.state.differences(state_path, fingerprint)
    if differences is None:
        return (f"Nothing to resume: no saved state at {state_path}. Leave out --resume to start the run."
                if require_resume else None)
    if not differences:
        return None
    shown = "; ".join(differences[:4]) + ("; ..." if len(differences) > 4 else "")
    return (f"{state_path} holds the saved state of another run ({shown}). Give the same settings, data and VAE "
            "to resume it, or another output name to start a new run (or delete that file to start over).")


def main(argv: list[str] | None = None) -> None:
    """The command line (arguments: codec_cli.py): load the VAE through the host, train with a progress bar.
    Under torchrun every process runs it, and rank 0 alone prints and writes."""
    command = codec_cli.parse_command(argv)
    processes = distributed.from_environment()
    host_path.use_comfyui(command.comfyui, command.cpu)
    config = CodecTrainConfig(**command.settings)
    try:
        check_config(config, processes)
        check_output(command.output)
        if processes.launched:
            distributed.join(processes, command.cpu, _host_device)
        dataset = _dataset(command, processes)
    except ValueError as err:  # dataset errors and DifferentDataError among them
        raise SystemExit(str(err)) from err
    from . import host, host_vae

    with torch.inference_mode(False), training.command.exits_on_failure(processes):
        try:
            vae, space = host_vae.load_vae_file(command.vae, command.latent_format)
            layout, initial = host.codec_start(space.name, space.label, space.channels, space.downscale,
                                               config.init, command.decoder_width)
        except ValueError as err:
            raise SystemExit(str(err)) from err
        if processes.is_main:
            print(f"{space.describe()}; {dataset.scan.summary()}, {len(dataset.validation)} held out -> "
                  f"{command.output}"
                  + distributed.sharing_note(processes, config.batch_size))
        with training.command.progress_bar(config.steps, processes) as progress:
            try:
                report = train_codec(vae, vae.signature, space.name, dataset, config, command.output, layout,
                                     initial=initial, on_step=progress, processes=processes,
                                     require_resume=command.resume)
            except OtherRunError as err:
                raise SystemExit(str(err)) from err
    distributed.stop()
    if processes.is_main:
        _print_summary(report, config, command.output)


def _print_summary(report: CodecReport, config: CodecTrainConfig, output: str) -> None:
    if report.run.resumed_from:
        print(f"resumed from step {report.run.resumed_from}")
    terms = ", ".join(f"{name} {value:.4f}" for name, value in report.recent().items())
    speed = f"; {report.run.images_per_second(config.batch_size):.2f} images/s" if report.run.step_seconds else ""
    print(f"last steps: {terms}{speed}")
    if report.validation:
        v = report.validation
        print(f"held out: alpha error {v.alpha_error:.4f} (a constant guess: {v.constant_alpha_error:.4f}), "
              f"harmlessness {v.harmlessness_psnr:.1f} dB PSNR (the VAE's own reconstruction: {v.vae_psnr:.1f} dB), "
              f"offset {v.offset_ratio:.2f} of the latent's spread")
    print(f"saved {output}")


def _host_device() -> torch.device:
    from . import host_vae

    return host_vae.torch_device()


def _dataset(command: codec_cli.CodecCommand, processes: distributed.Processes) -> RGBAFolder:
    dataset = RGBAFolder(command.data, command.resolution)
    training.fingerprint.require_same_data(dataset.contents(), processes, len(dataset.scan.usable),
                                           "transparent images", command.data)
    return dataset


if __name__ == "__main__":
    main()
