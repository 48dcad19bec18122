export interface TempPostgres {
  /** postgres:// URL of the database `kiln`, through the socket. */
  url: string;
  /** A new empty database on the same server, and its URL. */
  create(name: string): string;
  stop(): void;
}
export function startPostgres(): TempPostgres;
