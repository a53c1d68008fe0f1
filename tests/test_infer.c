/* kiln infer: answers in input order equal to single generation, with several workers, bad rows
 * reported in place, --resume after a kill, and the shards of an mpirun merged into the same file. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "kiln.h"
#include "test.h"
#include "test_decode.h"

static const char *PROMPTS[6] = {"Once upon a time", "Lily", "The dog", "Tom and Sam", "One day", "A bird sang"};

static void write_input(const char *path, int bad_row) {
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 6; i++) {
        if (i == bad_row) fprintf(f, "{\"id\":\"r%d\",\"prompt\":\"%s\",\"max_tokens\":-3}\n", i, PROMPTS[i]);
        else fprintf(f, "{\"id\":\"r%d\",\"prompt\":\"%s\",\"max_tokens\":%d}\n", i, PROMPTS[i], 4 + 3 * i);
    }
    fclose(f);
}

/* The answers of OUT, checked against greedy generation row by row (BAD_ROW must hold an error). */
static void check_output(kiln_model *m, const char *out, int bad_row) {
    FILE *f = fopen(out, "r");
    CHECKF(f, "%s was not written", out);
    char line[4096];
    int i = 0;
    while (fgets(line, sizeof line, f)) {
        CHECKF(i < 6, "more than 6 answers");
        json_t *o = json_loads(line, 0, NULL);
        CHECKF(o, "not JSON: %s", line);
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        CHECK_STR(json_string_value(json_object_get(o, "id")), id);
        if (i == bad_row) {
            CHECK(strstr(json_string_value(json_object_get(o, "error")), "max_tokens") != NULL);
        } else {
            char *want = greedy_text(m, PROMPTS[i], 4 + 3 * i);
            CHECK_STR(json_string_value(json_object_get(o, "text")), want);
            free(want);
        }
        json_decref(o);
        i++;
    }
    fclose(f);
    CHECK_EQ_INT(i, 6);
}

TEST(infer_writes_every_answer_in_input_order_with_two_workers) {
    const char *path;
    kiln_model *m = stories_model(&path);
    char in[4096], out[4096], cmd[16384];
    snprintf(in, sizeof in, "%s", test_tmp("in.jsonl"));
    snprintf(out, sizeof out, "%s", test_tmp("out.jsonl"));
    write_input(in, 2);
    snprintf(cmd, sizeof cmd, "%s infer -m %s --in %s --out %s --workers 2 --threads 1", test_kiln_bin(), path, in, out);
    char *err;
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    free(err);
    check_output(m, out, 2);
    kiln_model_close(m);
}

TEST(infer_resume_keeps_written_answers_and_cuts_a_torn_line) {
    const char *path;
    kiln_model *m = stories_model(&path);
    char in[4096], out[4096], cmd[16384];
    snprintf(in, sizeof in, "%s", test_tmp("in.jsonl"));
    snprintf(out, sizeof out, "%s", test_tmp("out.jsonl"));
    write_input(in, -1);
    /* as a kill leaves it: two answers, then half of the third */
    char *a0 = greedy_text(m, PROMPTS[0], 4), *a1 = greedy_text(m, PROMPTS[1], 7);
    FILE *f = fopen(out, "w");
    fprintf(f, "{\"id\":\"r0\",\"text\":\"%s\",\"kept\":1}\n{\"id\":\"r1\",\"text\":\"%s\",\"kept\":1}\n{\"id\":\"r2\",\"te",
            a0, a1);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s infer -m %s --in %s --out %s --resume --threads 1", test_kiln_bin(), path, in, out);
    char *err;
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    CHECKF(strstr(err, "2 rows already") != NULL, "%s", err);
    free(err);
    check_output(m, out, -1);
    char *text;
    snprintf(cmd, sizeof cmd, "grep -c kept %s", out);
    test_run(cmd, &text, NULL);
    CHECK_EQ_INT(atoi(text), 2);
    free(text);
    free(a0);
    free(a1);
    kiln_model_close(m);
}

TEST(infer_batch_decodes_rows_together_with_the_same_answers) {
    const char *path;
    kiln_model *m = stories_model(&path);
    char in[4096], out[4096], cmd[16384];
    snprintf(in, sizeof in, "%s", test_tmp("in.jsonl"));
    snprintf(out, sizeof out, "%s", test_tmp("out.jsonl"));
    write_input(in, 4);
    snprintf(cmd, sizeof cmd, "%s infer -m %s --in %s --out %s --batch 3 --threads 1", test_kiln_bin(), path, in, out);
    char *err;
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    free(err);
    check_output(m, out, 4);
    kiln_model_close(m);
}

/* mpirun refuses root unless told; --oversubscribe: the machine may have fewer slots than 2 */
#define MPIRUN "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe"

static char *file_text(const char *path) {
    size_t n;
    char *s = kiln_read_file(path, &n);
    CHECKF(s, "%s", kiln_last_error());
    return s;
}

TEST(infer_under_mpirun_merges_the_shards_into_the_one_process_answers) {
    CHECKF(system("command -v mpirun >/dev/null 2>&1") == 0,
           "mpirun not found: install openmpi-bin (scripts/setup.sh does)");
    const char *path;
    kiln_model *m = stories_model(&path);
    kiln_model_close(m);
    char in[4096], one[4096], two[4096], cmd[16384], *err;
    snprintf(in, sizeof in, "%s", test_tmp("in.jsonl"));
    snprintf(one, sizeof one, "%s", test_tmp("one.jsonl"));
    snprintf(two, sizeof two, "%s", test_tmp("two.jsonl"));
    write_input(in, 3);
    snprintf(cmd, sizeof cmd, "%s infer -m %s --in %s --out %s --threads 1", test_kiln_bin(), path, in, one);
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    free(err);
    snprintf(cmd, sizeof cmd, MPIRUN " -np 2 %s infer -m %s --in %s --out %s --threads 1", test_kiln_bin(), path, in,
             two);
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    free(err);
    char *a = file_text(one), *b = file_text(two);
    CHECK_STR(b, a);
    snprintf(cmd, sizeof cmd, "ls %s.part* 2>/dev/null | wc -l", two);
    char *parts;
    test_run(cmd, &parts, NULL);
    CHECK_EQ_INT(atoi(parts), 0);
    free(parts);
    free(a);
    free(b);
}

TEST(infer_resume_keeps_the_answers_of_out_and_of_the_parts_a_killed_mpirun_left) {
    const char *path;
    kiln_model *m = stories_model(&path);
    char in[4096], out[4096], part[4200], cmd[16384], *err;
    snprintf(in, sizeof in, "%s", test_tmp("in.jsonl"));
    snprintf(out, sizeof out, "%s", test_tmp("out.jsonl"));
    write_input(in, -1);
    /* as a kill leaves it: row 0 merged into OUT by an earlier run, rows 2 and 5 in the parts of two
     * processes, one of them with half of row 3 */
    char *a0 = greedy_text(m, PROMPTS[0], 4), *a2 = greedy_text(m, PROMPTS[2], 10);
    char *a5 = greedy_text(m, PROMPTS[5], 19);
    FILE *f = fopen(out, "w");
    fprintf(f, "{\"id\":\"r0\",\"text\":\"%s\",\"kept\":1}\n", a0);
    fclose(f);
    snprintf(part, sizeof part, "%s.part0", out);
    f = fopen(part, "w");
    fprintf(f, "2\t{\"id\":\"r2\",\"text\":\"%s\",\"kept\":1}\n3\t{\"id\":\"r3\",\"te", a2);
    fclose(f);
    snprintf(part, sizeof part, "%s.part1", out);
    f = fopen(part, "w");
    fprintf(f, "5\t{\"id\":\"r5\",\"text\":\"%s\",\"kept\":1}\n", a5);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s infer -m %s --in %s --out %s --resume --threads 1", test_kiln_bin(), path, in, out);
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    CHECKF(strstr(err, "3 rows already") != NULL, "%s", err);
    free(err);
    check_output(m, out, -1);
    char *text;
    snprintf(cmd, sizeof cmd, "grep -c kept %s; ls %s.part* 2>/dev/null | wc -l", out, out);
    test_run(cmd, &text, NULL);
    CHECK_STR(text, "3\n0\n");
    free(text);
    free(a0);
    free(a2);
    free(a5);
    kiln_model_close(m);
}
