/* The error table (errors.def: every code has its text, values are unique and in the
 * reserved range) and the report helper of the consistency checkers (counting, line
 * ends, truncation, the NUL, a NULL buffer). */
#include <string.h>

#include "check.h"
#include "report.h"

static void test_table(void)
{
    static const struct {
        int code;
        const char *text;
    } t[] = {
#define SHK_ERROR(value, name, text, pyclass) {name, text},
#include "errors.def"
#undef SHK_ERROR
    };
    size_t n = sizeof t / sizeof t[0];
    CHECK(n >= 20);
    for (size_t i = 0; i < n; i++) {
        CHECK(t[i].code <= SHK_ERANGE_FIRST && t[i].code >= SHK_ERANGE_LAST);
        CHECK(strcmp(shk_strerror(t[i].code), t[i].text) == 0);
        for (size_t j = 0; j < i; j++)
            CHECK(t[i].code != t[j].code);
    }
    CHECK_EQ(SHK_ECORRUPT, -30600); /* values are part of the C interface */
    CHECK_EQ(SHK_ENOGROW, -30618);
    CHECK_EQ(SHK_EOBJMISMATCH, -30619);
    CHECK(strcmp(shk_strerror(0), "success") == 0);
    CHECK(strcmp(shk_strerror(-30698), "unknown shmkit error") == 0);
    CHECK(strlen(shk_strerror(2)) > 0); /* errno text */
    CHECK_EQ(shk_fail(SHK_ECORRUPT, "f(): %d is wrong", 7), SHK_ECORRUPT);
    CHECK(strcmp(shk_error_detail(), "f(): 7 is wrong") == 0);
    shk_clear_detail();
    CHECK(strcmp(shk_error_detail(), "") == 0);
}

static void test_report(void)
{
    char buf[32];
    struct shk_report rp;
    shk_report_init(&rp, buf, sizeof buf);
    CHECK(strcmp(buf, "") == 0);
    shk_report_problem(&rp, "page %d: bad", 3);
    shk_report_problem(&rp, "%s", "");
    CHECK(strcmp(buf, "page 3: bad\n\n") == 0);
    CHECK_EQ(rp.problems, 2);
    /* a line too long is cut so that its '\n' and the NUL still fit */
    shk_report_problem(&rp, "%s", "abcdefghijklmnopqrstuvwxyz");
    CHECK_EQ(strlen(buf), sizeof buf - 1);
    CHECK_EQ(buf[sizeof buf - 2], '\n');
    CHECK(strncmp(buf + 13, "abcdefghijklmnopq", 17) == 0);
    /* full: later problems are counted, not written */
    shk_report_problem(&rp, "more");
    CHECK_EQ(rp.problems, 4);
    CHECK_EQ(strlen(buf), sizeof buf - 1);
    /* a buffer with room for nothing, and no buffer at all */
    char one[2] = {'x', 'x'};
    shk_report_init(&rp, one, sizeof one);
    shk_report_problem(&rp, "x");
    CHECK_EQ(one[0], '\0');
    CHECK_EQ(rp.problems, 1);
    shk_report_init(&rp, NULL, 0);
    shk_report_problem(&rp, "counted");
    CHECK_EQ(rp.problems, 1);
}

int main(void)
{
    test_table();
    test_report();
    TEST_MAIN_END();
}
