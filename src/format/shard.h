/* Tensor- and pipeline-parallel shards in Megatron-LM's layout (megatron-core GPTModel names), one
 * safetensors file per rank: DIR/mp_rank_TT_PPP/model.safetensors for tensor rank TT and pipeline stage
 * PPP (Megatron's folder names), DIR/config.gguf with the model's metadata and the tensors that are not
 * split, and DIR/shards.json with the layout.
 *
 * Tensor parallelism: q/k/v are fused per query group ([q heads of the group; k; v], group after group),
 * so each rank holds whole groups; with more ranks than kv heads each rank holds its share of a group's
 * q heads and a copy of the group's k and v. SwiGLU's gate and up are split separately and fused per rank
 * ([gate slice; up slice]). The attention output and down projections are split by columns (their
 * partial products are summed across ranks); embeddings and the output layer by vocabulary rows, padded
 * to a multiple of 128 * TP. Norms and biases of split-by-column projections are on every rank.
 * Pipeline parallelism: stage s holds layers [s L/PP, (s+1) L/PP), numbered from 0 within the stage;
 * the embedding is on the first stage, the final norm and output layer on the last (a tied embedding
 * on both, as Megatron keeps it). */
#ifndef KILN_FORMAT_SHARD_H
#define KILN_FORMAT_SHARD_H

#include <stddef.h>

#include "format/gguf.h"
#include "model/transformer.h"

/* Shards the model of G (configuration C) into DIR (created; must not hold shards already). */
int shard_write(const gguf_file *g, const kiln_config *c, int tp, int pp, const char *dir);
/* Merges DIR back into one GGUF model file at OUT_PATH, atomically: the file sharded, byte for byte. */
int shard_merge(const char *dir, const char *out_path);
/* The path of rank (TP_RANK, PP_RANK)'s file in DIR. */
void shard_rank_path(char *buf, size_t n, const char *dir, int tp_rank, int pp_rank);

#endif
