"""Structured fuzzing of .syn model files and ONNX models (issue 15).

seeds.py: valid seed models; mutate_syn.py / mutate_onnx.py: structured mutators;
check.py: one case -> an outcome; run.py: the campaign runner (forked workers with a
memory limit and a timeout), `python -m tests.fuzz.run --syn 10000 --onnx 20000`.
corpus/: every case that once found a bug, replayed by tests/test_fuzz_corpus.py.
"""
