#!/bin/bash
# Student accuracy per encoding on the embedded Fashion-MNIST sample (6,000 train / 1,000 test), 3 init seeds
# (docs/encodings.md, "Student accuracy"). Run:  nice -n 10 bash benchmarks/encodings_students.sh
# TEACHER: a kdcache:cnn_small Fashion-MNIST checkpoint, e.g. from the first step of
# benchmarks/results_fashion_mnist.py (kdcache train-teacher --data fashion-mnist --val-data
# fashion-mnist,split=test --model kdcache:cnn_small --epochs 10 --lr 0.05 --schedule cosine --seed 0 --out teacher.pt).
# WORKDIR: where the store and runs go (default /tmp/enc-students). tests/test_benchmarks.py runs this script
# with `kdcache` replaced by a shell function that records each command, and checks that every one parses.
set -e
mkdir -p "${WORKDIR:-/tmp/enc-students}" && cd "${WORKDIR:-/tmp/enc-students}"
kdcache precompute --data embedded --teacher kdcache:cnn_small --weights "${TEACHER:-/work/fmnist-results/teacher.pt}" --views 4 --seed 0 --encoding float32 --teacher-name f32 --out store.zarr
for e in float16 int8 topk:3 sample:16@2; do
  n=$(echo $e | tr -d ':.' | tr '@' 'a')
  kdcache convert store.zarr --teacher-name f32 --encoding $e --as $n
done
for t in float16 int8 topk3 sample16a2; do
  runs="--run kd:kd:temperature=2,ce_weight=0.5,kd_weight=0.5"
  if [ $t != sample16a2 ]; then runs="$runs --run nkd:nkd:gamma=1.5,temperature=1"; fi
  kdcache sweep store.zarr --teacher-name $t --data embedded --val-data embedded,split=test --student kdcache:mlp --epochs 4 --lr 0.05 --schedule cosine --seed 0 $runs --init-seed 0 --init-seed 1 --init-seed 2 --out runs/$t
done
echo ALLDONE
