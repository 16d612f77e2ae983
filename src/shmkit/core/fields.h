/*
 * fields.h - a statistics record's fields by name, declared once beside the record.
 *
 * A structure's statistics are a plain C record filled by its core function; the table
 * next to it names each field, its kind and where it is, so that whoever shows the record
 * (the binding turns it into a dict, a C program prints it) reads the names from one
 * place instead of repeating them field by field.
 */
#ifndef SHK_FIELDS_H
#define SHK_FIELDS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum shk_field_kind {
    SHK_FIELD_U64,  /* uint64_t */
    SHK_FIELD_U32,  /* uint32_t */
    SHK_FIELD_I32,  /* int32_t */
    SHK_FIELD_I64,  /* int64_t */
    SHK_FIELD_BOOL, /* int: 0 false, else true */
    SHK_FIELD_TRI,  /* int: -1 unknown (None), 0 false, else true */
    SHK_FIELD_F64,  /* double */
};

struct shk_field {
    const char *name; /* NULL ends a table */
    uint32_t kind;    /* enum shk_field_kind */
    uint32_t off;     /* offsetof the field in its record */
};

/* One table row: SHK_FIELD(struct shk_x_stats, waiters, U32). */
#define SHK_FIELD(rec, member, kind) {#member, SHK_FIELD_##kind, (uint32_t)offsetof(rec, member)}
/* A row whose shown name differs from the member's. */
#define SHK_FIELD_AS(name, rec, member, kind) {name, SHK_FIELD_##kind, (uint32_t)offsetof(rec, member)}

#ifdef __cplusplus
}
#endif
#endif
