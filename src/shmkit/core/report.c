#include "report.h"

#include <stdarg.h>
#include <stdio.h>

void shk_report_init(struct shk_report *rp, char *buf, size_t cap)
{
    rp->buf = cap ? buf : NULL;
    rp->cap = cap;
    rp->len = 0;
    rp->problems = 0;
    if (rp->buf)
        rp->buf[0] = '\0';
}

void shk_report_problem(struct shk_report *rp, const char *fmt, ...)
{
    rp->problems++;
    /* room for at least one character, the '\n' and the NUL */
    if (!rp->buf || rp->len + 2 >= rp->cap)
        return;
    size_t room = rp->cap - rp->len - 1; /* vsnprintf's size: leaves the last byte */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(rp->buf + rp->len, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    /* a truncated line keeps room - 1 characters, so that the '\n' fits before the NUL */
    rp->len += (size_t)n < room ? (size_t)n : room - 1;
    rp->buf[rp->len++] = '\n';
    rp->buf[rp->len] = '\0';
}
