/* placeholder: being written */
#include "internal.h"
void ferry_open_archive(lua_State *L) { (void)L; }
