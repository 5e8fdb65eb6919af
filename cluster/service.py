"""One scan to one catalog row: where the scanner and the catalog meet, for the CLI and the batch workers."""
from __future__ import annotations

import time
from pathlib import Path

from catalog.canonical import Canonical
from catalog.rows import failed_row, ok_row
from scanner import __version__ as SCANNER_VERSION
from scanner.config import ScanConfig, verdict_flags
from scanner.errors import ScanError
from scanner.load.sources import model_name


def scan_to_row(spec: str, revision: str | None, cfg: ScanConfig, *, pinned: bool = False, host: str | None = None,
                progress: bool = False, base: str | None = None, base_from: str = "flag"):
    """Scan, and the catalog row of the outcome: (row, result, None), or a `failed` row naming what went
    wrong, (row, None, error), for the caller to record and re-raise. `pinned`: `revision` is what a batch
    pinned (a hub commit, or the fingerprint of local files), and exactly that is scanned. `base`: the base
    model the user named (`base_from`: flag | models_file), which takes the place of what the files declare."""
    row, result, error = _scan_to_row(spec, revision, cfg, pinned, host, progress)
    if base is not None:
        row.update(base_model=model_name(base), base_model_from=base_from)
    return row, result, error


def _scan_to_row(spec, revision, cfg, pinned, host, progress):
    from scanner.load.sources import resolve, resolve_pinned

    started, source = time.time(), None
    try:
        source = resolve_pinned(spec, revision) if pinned else resolve(spec, revision)
        from scanner.scan import scan_source  # torch and transformers: once the files are found and checked

        result = scan_source(source, cfg, started, progress)
    except Exception as e:  # noqa: BLE001  the caller decides: re-raise (CLI) or keep the row (batch)
        # the project's own kinds name what went wrong; anything else is a fault of this program's
        kind, text = (None, str(e)) if isinstance(e, ScanError) else ("InternalError", f"{type(e).__name__}: {e}")
        return failure(spec, text or type(e).__name__, started, cfg, error_type=kind or type(e).__name__,
                       revision=source.revision if source else revision, repo_id=source.repo_id if source else None,
                       source=source.kind if source else None, host=host), None, e
    return ok_row(result.to_dict(), host=host), result, None


def failure(spec: str, error: BaseException | str, started: float, cfg: ScanConfig | None, *,
            revision: str | None = None, repo_id: str | None = None, source: str | None = None,
            error_type: str | None = None, host: str | None = None, base: str | None = None) -> dict:
    """The catalog row of a scan that did not finish, by this scanner, with the configuration asked for (and
    the base model its models-file line named)."""
    row = failed_row(spec, error, started, model=model_name(spec, repo_id, source), scanner_version=SCANNER_VERSION,
                      error_type=error_type, revision=revision, repo_id=repo_id, source=source,
                      config=cfg.to_dict() if cfg else None, config_fingerprint=cfg.fingerprint() if cfg else None,
                      host=host)
    if base is not None:
        row.update(base_model=base, base_model_from="models_file")
    return row


def canonical(config_file: str | None = None, cfg: ScanConfig | None = None) -> Canonical:
    """The configuration an index shows: `cfg`, else the one in `config_file` (JSON, as `--scan-config` takes),
    else the default."""
    if cfg is None and config_file is not None:
        import json

        from scanner.errors import BadInput
        from scanner.options import read_text

        try:
            cfg = ScanConfig.from_dict(json.loads(read_text(Path(config_file))))
        except (ValueError, TypeError, AttributeError) as e:
            raise BadInput(f"{config_file} is not a scan configuration: {e}") from None
    cfg = cfg or ScanConfig()
    return Canonical(cfg.fingerprint(), cfg.to_dict(), verdict_flags())
