/* kiln infer: answers in input order equal to single generation, with several workers, bad rows
 * reported in place, and --resume after a kill. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
