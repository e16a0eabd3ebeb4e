// Online backup of a coordinator's database with SQLite's backup API: safe while a coordinator
// (this process or another) serves the same database in WAL mode.
#ifndef MOESWEEP_SERVER_BACKUP_H_
#define MOESWEEP_SERVER_BACKUP_H_

#include <string>

#include "common/status.h"

namespace moesweep {

// Copies the database at `db` to a new file `to` (refused if it exists), as one consistent
// snapshot: the copy runs in a single read transaction, which in WAL mode never blocks the
// serving coordinator's writes. The copy is written beside `to` first and renamed into place only
// after SQLite's quick_check passes, so `to` is either a whole backup or absent. The result is
// one self-contained file (rollback journal mode); restoring is copying it back while no
// coordinator runs on the target (README, "Backup and restore").
Status BackupDatabase(const std::string& db, const std::string& to);

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_BACKUP_H_
