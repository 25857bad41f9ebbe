package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// copiedTables are the tables ExportRows copies, in an order that keeps
// foreign keys satisfied on import: everything but the schema's own table
// and the cluster secrets (moved sealed, by the secrets package).
var copiedTables = []string{
	"api_keys",
	"agents",
	"enrollment_tokens",
	"consumed_enrollment_tokens",
	"session_token_uses",
	"sessions",
}

// Rows is a copy of a store's rows — API keys, agents with their routes,
// enrollment tokens and consumed jtis, session token counts and the session
// audit — for moving a gateway to another store of the same schema
// version. Values are the column values as stored: strings, integers and
// nulls (integers read back from JSON as json.Number).
type Rows struct {
	// SchemaVersion is the schema the rows were read from.
	SchemaVersion int64       `json:"schema_version"`
	Tables        []TableRows `json:"tables"`
}

// TableRows is one table of Rows.
type TableRows struct {
	Name    string   `json:"name"`
	Columns []string `json:"columns"`
	Rows    [][]any  `json:"rows"`
}

// Count returns how many rows of each table r holds, by table name.
func (r Rows) Count() map[string]int {
	out := make(map[string]int, len(r.Tables))
	for _, t := range r.Tables {
		out[t.Name] = len(t.Rows)
	}
	return out
}

// ExportRows implements Store: one consistent read of every copied table.
func (s *sqlStore) ExportRows(ctx context.Context) (Rows, error) {
	var out Rows
	err := s.read(ctx, func(ctx context.Context) error {
		tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
		if err != nil {
			return err
		}
		defer tx.Rollback()
		out = Rows{}
		if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&out.SchemaVersion); err != nil {
			return fmt.Errorf("schema version: %w", err)
		}
		for _, table := range copiedTables {
			t, err := exportTable(ctx, tx, table)
			if err != nil {
				return fmt.Errorf("%s: %w", table, err)
			}
			out.Tables = append(out.Tables, t)
		}
		return nil
	})
	if err != nil {
		return Rows{}, wrapErr("export rows", err)
	}
	return out, nil
}

// exportTable reads every row of table (one of copiedTables).
func exportTable(ctx context.Context, tx *sql.Tx, table string) (TableRows, error) {
	rows, err := tx.QueryContext(ctx, `SELECT * FROM `+table)
	if err != nil {
		return TableRows{}, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return TableRows{}, err
	}
	t := TableRows{Name: table, Columns: cols, Rows: [][]any{}}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return TableRows{}, err
		}
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				vals[i] = string(b)
			}
		}
		t.Rows = append(t.Rows, vals)
	}
	return t, rows.Err()
}

// ImportRows implements Store.
func (s *sqlStore) ImportRows(ctx context.Context, r Rows) error {
	ms, err := loadMigrations(migrationFiles, s.d.name())
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if r.SchemaVersion != int64(len(ms)) {
		return fmt.Errorf("%w: rows of schema version %d, this store is at version %d: export and import with the same gateway version",
			ErrInvalid, r.SchemaVersion, len(ms))
	}
	for _, t := range r.Tables {
		if !slices.Contains(copiedTables, t.Name) {
			return fmt.Errorf("%w: rows of an unknown table %q", ErrInvalid, t.Name)
		}
		for _, c := range t.Columns {
			if c == "" || strings.Trim(c, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
				return fmt.Errorf("%w: table %s: column name %q", ErrInvalid, t.Name, c)
			}
		}
	}
	// Tables in copiedTables order, so foreign keys hold.
	ordered := slices.Clone(r.Tables)
	slices.SortStableFunc(ordered, func(a, b TableRows) int {
		return slices.Index(copiedTables, a.Name) - slices.Index(copiedTables, b.Name)
	})
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, table := range copiedTables {
			var n int64
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
				return fmt.Errorf("%s: %w", table, err)
			}
			if n > 0 {
				return fmt.Errorf("%w: table %s already holds %d rows; rows are imported into an empty store only", ErrConflict, table, n)
			}
		}
		for _, t := range ordered {
			if err := importTable(ctx, tx, t); err != nil {
				return fmt.Errorf("%s: %w", t.Name, err)
			}
		}
		return nil
	})
	return wrapErr("import rows", err)
}

// importTable inserts t's rows (its name and columns checked).
func importTable(ctx context.Context, tx *sql.Tx, t TableRows) error {
	if len(t.Rows) == 0 {
		return nil
	}
	marks := make([]string, len(t.Columns))
	for i := range marks {
		marks[i] = fmt.Sprintf("$%d", i+1)
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO `+t.Name+` (`+strings.Join(t.Columns, ", ")+`) VALUES (`+strings.Join(marks, ", ")+`)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for i, row := range t.Rows {
		if len(row) != len(t.Columns) {
			return fmt.Errorf("%w: row %d has %d values for %d columns", ErrInvalid, i, len(row), len(t.Columns))
		}
		args := make([]any, len(row))
		for j, v := range row {
			switch v := v.(type) {
			case nil, string, int64:
				args[j] = v
			case json.Number:
				n, err := v.Int64()
				if err != nil {
					return fmt.Errorf("%w: row %d, %s: %v", ErrInvalid, i, t.Columns[j], err)
				}
				args[j] = n
			default:
				return fmt.Errorf("%w: row %d, %s: a value of type %T", ErrInvalid, i, t.Columns[j], v)
			}
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("row %d: %w", i, err)
		}
	}
	return nil
}
