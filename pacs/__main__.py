"""``python -m pacs``: a local Orthanc with DICOMweb, filled with a folder of NIfTI studies as MR series.

    python -m pacs --studies demo_output/studies --folder demo_output/pacs --port 8042

Each ``<subject>_<sequence>.nii.gz`` (the app's file-name convention, as ``make demo`` writes them) becomes one series
of the subject's study, ``SeriesDescription`` = the sequence. Runs until Ctrl-C; the storage folder is kept, so a
second start serves the same studies (re-uploading identical instances is a no-op).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from pacs.orthanc import Orthanc, OrthancError
from pacs.series import upload, write_series


def _subject_and_sequence(stem: str) -> tuple[str, str]:
    from scripts.data.modality import canonical_modality

    subject, _, suffix = stem.rpartition("_")
    try:
        sequence = canonical_modality(suffix) if subject else None
    except ValueError:
        sequence = None
    return (subject, sequence) if sequence else (stem, "unknown sequence")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pacs", description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=Path, help="folder of NIfTI images to send as MR series")
    parser.add_argument("--folder", type=Path, default=Path("demo_output/pacs"), help="storage + config folder")
    parser.add_argument("--port", type=int, default=8042)
    args = parser.parse_args(argv)
    pacs = Orthanc(args.folder, port=args.port)
    try:
        pacs.start()
    except OrthancError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        images = sorted(args.studies.glob("*.nii*")) if args.studies else []
        if args.studies and not images:
            print(f"warning: no NIfTI images in {args.studies}", file=sys.stderr)
        numbers: dict[str, int] = {}
        from scripts.io import strip_suffix

        for image in images:
            stem = strip_suffix(image.name)
            subject, sequence = _subject_and_sequence(stem)
            numbers[subject] = numbers.get(subject, 0) + 1
            files = write_series(image, args.folder / "dicom" / stem, sequence, subject, numbers[subject])
            upload(pacs.dicomweb, files)
            print(f"sent {image.name} as {subject} / {sequence} ({len(files)} slices)", flush=True)
        print(f"PACS ready: {pacs.dicomweb} (Orthanc explorer {pacs.url}/app/explorer.html); Ctrl-C stops it")
        print(f"serve it: make serve STUDIES={pacs.dicomweb}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while pacs.process is not None and pacs.process.poll() is None:
            time.sleep(1)
        return 0 if pacs.process is None else int(pacs.process.returncode or 0)
    except KeyboardInterrupt:
        return 0
    finally:
        pacs.stop()


if __name__ == "__main__":
    raise SystemExit(main())
