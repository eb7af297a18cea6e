#!/bin/bash
# One launched world over two nodes with torchrun (8 GPUs each: 16 processes). Run this script on BOTH nodes,
# with NODE_RANK=0 on the first and NODE_RANK=1 on the second; MASTER_ADDR is the first node's address, and
# the output folder is on a file system both nodes see.
#   MASTER_ADDR=10.0.0.1 NODE_RANK=0 bash docs/examples/two_nodes.sh     # node 0
#   MASTER_ADDR=10.0.0.1 NODE_RANK=1 bash docs/examples/two_nodes.sh     # node 1
# Under SLURM: srun --nodes=2 --ntasks-per-node=1 with NODE_RANK=$SLURM_NODEID and
# MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1).
set -euo pipefail
: "${MASTER_ADDR:?set MASTER_ADDR to the first node's address}" "${NODE_RANK:?set NODE_RANK to 0 or 1}"
LAUNCH=(torchrun --nnodes 2 --node_rank "$NODE_RANK" --nproc_per_node 8
        --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}")

# scoring: rank r of 16 scores shards i % 16 == r; rank 0 merges
"${LAUNCH[@]}" -m egt.cli score --config configs/qwen2.5-vl-7b/score.yaml
# evaluation: the (pair, order) batches split over the 16 ranks; rank 0 writes predictions and metrics
"${LAUNCH[@]}" -m egt.cli eval --config configs/qwen2.5-vl-7b/eval_vlrewardbench.yaml
# training: SFT with DeepSpeed ZeRO-3 needs accelerate's launcher for the DeepSpeed config:
#   accelerate launch --config_file configs/accelerate/zero3_8gpu.yaml --num_machines 2 --num_processes 16 \
#       --machine_rank "$NODE_RANK" --main_process_ip "$MASTER_ADDR" --main_process_port 29500 \
#       -m egt.cli sft --config configs/qwen2.5-vl-7b/sft_full_zero3.yaml
