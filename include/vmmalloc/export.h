/* Symbol visibility: the library is built with hidden visibility; VMM_API
 * marks the public entry points. */
#ifndef VMMALLOC_EXPORT_H
#define VMMALLOC_EXPORT_H

#if defined(VMMALLOC_STATIC_DEFINE)
#define VMM_API
#elif defined(__GNUC__)
#define VMM_API __attribute__((visibility("default")))
#else
#define VMM_API
#endif

#endif /* VMMALLOC_EXPORT_H */
