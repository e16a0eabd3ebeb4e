#!/bin/sh
# A trainer that finishes at once, for sweeps of thousands of trials (the dashboard's big-sweep
# measurement): fast_trainer.sh X Y SEED reports one final report with an objective that depends
# on X, Y and SEED, and one MoE layer of 8 experts.
awk -v x="$1" -v y="$2" -v s="$3" 'BEGIN {
  acc = 0.9 - 0.0001 * (x - 25) * (x - 25) - 0.0002 * (y - 40) * (y - 40) + 0.001 * s
  printf "@moesweep {\"metrics\": {\"val_accuracy\": %.6f, \"train_loss\": %.6f}, \"expert_stats\": [{\"layer\": 0, \"usage\": [", acc, 1 - acc
  total = 0
  for (e = 0; e < 8; e++) { u[e] = exp(-e / (1 + x / 10)); total += u[e] }
  for (e = 0; e < 8; e++) printf "%s%.5f", (e ? ", " : ""), u[e] / total
  printf "], \"activation_rate\": 0.9, \"router_entropy\": %.4f}], \"final\": true}\n", 0.5 + y / 200
}'
