/*
 * report.h - how the consistency checkers (shk_zone_check, shk_dict_check, ...) report
 * what they find: one problem per line, appended to a caller's buffer.
 *
 * A checker counts every problem, and writes as many lines as fit: the text is always
 * NUL-terminated and each line, possibly truncated, ends with '\n'.  buf may be NULL
 * (count only).  The binding turns the result into (count, lines) in one place.
 */
#ifndef SHK_REPORT_H
#define SHK_REPORT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct shk_report {
    char *buf;          /* NULL: only count */
    size_t cap, len;    /* buffer size; bytes written so far (without the NUL) */
    int problems;       /* problems found, written or not */
};

/* Start an empty report over buf[0, cap). */
void shk_report_init(struct shk_report *rp, char *buf, size_t cap);

/* Count one problem and append it as one line ("function or structure: invariant"). */
void shk_report_problem(struct shk_report *rp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
