/* placeholder: being written */
#include "internal.h"
void ferry_open_b64(lua_State *L) { (void)L; }
