"""portclone's backends, one module each; portclone._registry imports them lazily.

- ``linux``: clone3(2), falling back to clone(2), through the native extension;
- ``netbsd``: libc's clone with NetBSD's rules (on Linux: glibc's clone, same rules);
- ``fork``: os.fork and os.posix_spawn, everywhere else.
"""
