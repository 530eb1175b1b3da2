/* placeholder: being written */
#include "internal.h"
void ferry_open_fs(lua_State *L) { (void)L; }
