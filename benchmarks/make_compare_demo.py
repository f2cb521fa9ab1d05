"""Run `wsss-nb compare` on the demo settings and keep its results, with the settings they came from, in
`nbs/data/compare_demo.json` (read by `nbs/19_compare.ipynb`; `tests/test_compare.py` fails when the demo configs no
longer match the recorded settings, so rerun this script then).

    python benchmarks/make_compare_demo.py                       # every method (about 10 min each on 2 idle cores)
    python benchmarks/make_compare_demo.py --methods cam sccam   # a subset
    python benchmarks/make_compare_demo.py --collect-only        # only collect the finished outputs/compare_<method> runs

A method whose run did not finish (or ran with other settings) is left out of the table and named in the file."""
import argparse, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def main(argv=None):
    from wsss_nb.cam import method_names
    from wsss_nb.compare import DEMO_RECORD, demo_record, record_summary
    from wsss_nb.core import save_json
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--methods', nargs='+', default=None, help='methods, in order (default: cam first, then the others)')
    ap.add_argument('--out-root', default='outputs', help='where the compare_<method> runs are (relative: to the project root)')
    ap.add_argument('--collect-only', action='store_true', help='do not run; collect the finished runs')
    ap.add_argument('--dest', default=DEMO_RECORD, help='the record to write')
    ap.add_argument('--note', default='', help='a sentence kept in the record and shown in the lesson (e.g. the machine was shared)')
    a = ap.parse_args(argv)
    methods = a.methods or ['cam'] + [m for m in method_names() if m != 'cam']
    command = 'wsss-nb compare --methods ' + ' '.join(methods)
    if not a.collect_only:
        env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
        rc = subprocess.run([sys.executable, '-m', 'wsss_nb.cli', 'compare', '--methods', *methods, '--quiet'], cwd=ROOT, env=env).returncode
        if rc: print(f'[make_compare_demo] wsss-nb compare exited with {rc}; collecting the runs that finished', file=sys.stderr)
    record = demo_record(methods, a.out_root, command, note=a.note)
    dest = ROOT/a.dest
    save_json(record, dest)
    print(record_summary(record)); print(f'[make_compare_demo] wrote {dest}')
    return 0 if record['finished'] else 1

if __name__ == '__main__': sys.exit(main())
