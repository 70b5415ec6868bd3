/* own.c - a file of the consuming project.  It is compiled into the
 * consumer only; libconc must never take it for one of its sources (a
 * glob over the top project's src/ would). */
#ifdef CONC_BUILDING
#error "libconc compiled a source file of the project that consumes it"
#endif
int consumer_own_function(void);
int consumer_own_function(void)
{
    return 0;
}
