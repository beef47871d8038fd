"""PostgreSQL's words, in every language it speaks, for the few failures that reach a
client without their SQLSTATE.

A connection the server refuses as it starts (its connection limit: SQLSTATE 53300; a
backend that cannot write its files on a full disk: 53100) reaches psycopg as a message
only. libpq keeps the error's fields to itself and prints the SQLSTATE only at the
VERBOSE error verbosity, which psycopg cannot set before a connection exists: the
exception's ``sqlstate``, ``diag`` and ``pgresult`` are all empty, its ``pgconn`` closed
(psycopg 3.3, libpq 18). The server writes that message in its ``lc_messages``, which a
startup packet's options cannot change (they apply after these checks, and only a
superuser may set it). So those refusals are told by their words, in each language
PostgreSQL's and the C library's message catalogues hold (a full disk's words are the C
library's ``strerror``, in the same locale): a German server's "zu viele Verbindungen von
Rolle »r«" read as a server that does not answer, and opened the breaker.

Generated from PostgreSQL 15's ``postgres-15.mo`` and glibc's ``libc.mo`` catalogues: for
each message, its longest stretch of words between placeholders; for the reserved slots
message, which PostgreSQL 16 reworded, its first four words. A language missing here
(or a wording a later PostgreSQL brings) reads as before: a connection that failed.
"""

from __future__ import annotations

# A connection refused for a connection limit (the server's, a role's, a database's, or
# the slots reserved for superusers): SQLSTATE 53300
TOO_MANY_CONNECTIONS: tuple[str, ...] = (
    "die verbleibenden Verbindungen sind",
    "i rimanenti slot di",
    "les emplacements de connexions",
    "lo siento, ya tenemos demasiados clientes",
    "remaining connection slots are reserved",
    "sorry, too many clients already",
    "too many connections for database",
    "too many connections for role",
    'troppe connessioni al database "',
    'troppe connessioni per il ruolo "',
    "tut mir leid, schon zu viele Verbindungen",
    '" 데이터베이스 최대 접속수를 초과했습니다',
    '" 롤의 최대 동시 접속수를 초과했습니다',
    '"からの接続が多すぎます',
    '"への接続が多すぎます',
    '"发起的连接太多了',
    '"的连接太多了',
    "demasiadas conexiones para el rol «",
    "demasiadas conexiones para la base de datos «",
    "désolé, trop de clients sont déjà connectés",
    'för många uppkopplingar för roll "',
    'för många uppkopplingar till databasen "',
    "las conexiones restantes están",
    "ledsen, för många klienter",
    "resterande anslutningsslottar är reserverade",
    "spiacente, troppi client già connessi",
    "trop de connexions pour la base de données «",
    "trop de connexions pour le rôle «",
    "zu viele Verbindungen für Datenbank »",
    "zu viele Verbindungen von Rolle »",
    "вибачте, вже забагато клієнтів",
    'занадто багато підключень для ролі "',
    'занадто багато підключень до бази даних "',
    "извините, уже слишком много клиентов",
    "оставшиеся слоты подключений зарезервированы",
    'слишком много подключений для роли "',
    'слишком много подключений к БД "',
    "слоти підключень, які залишились,",
    'მეტისმეტად ბევრი კავშირი როლისთვის "',
    "უკაცრავად, უკვე მეტისმეტად ბევრი კლიენტია",
    'ძალიან ბევრი კავშირი ბაზისთვის "',
    "对不起, 已经有太多的客户",
    "已保留的连接位置为执",
    "残りの接続スロットは",
    "現在クライアント数が多すぎます",
    "남은 연결 슬롯은 non-replication",
    "최대 동시 접속자 수를 초과했습니다.",
)

# The C library's strerror(ENOSPC), which the server writes after what it could not write
NO_SPACE_LEFT: tuple[str, ...] = (
    "Geen ruimte meer over op apparaat",
    "No queda espacio en el dispositivo",
    "No resta espai al dispositiu",
    "No space left on device",
    "Non hai espacio libre no dispositivo",
    "Spazio esaurito sul device",
    "Tidak ruang lagi diperangkat",
    "Aucun espace disponible sur le périphérique",
    "Auf dem Gerät ist kein Speicherplatz mehr verfügbar",
    "Aygıt üzerinde boş yer yok",
    "Brak miejsca na urządzeniu",
    "Enheten är full",
    "Ikke mer plass på enheten",
    "Ikke mere plads på enheden",
    "Không có đủ chỗ trống trên thiết bị",
    "Laitteella ei ole tilaa jäljellä",
    "Na napravi ni več prostora",
    "Na zariadení už nie je žiadne miesto",
    "Na zařízení není volné místo",
    "Ne haviĝas plu da spaco sur aparato",
    "Nema više prostora na uređaju",
    "Nincs több hely a lemezen",
    "Não há espaço disponível no dispositivo",
    "Sem espaço livre no dispositivo",
    "Įrenginyje neliko vietos",
    "Δεν έμεινε καθόλου χώρος στη συσκευή",
    "На устройстве не осталось свободного места",
    "Недостатньо місця на пристрої",
    "Није преостало простора на уређају",
    "Няма месца на прыладзе",
    "Няма свободно място на устройството",
    "デバイスに空き領域がありません",
    "裝置上已無多餘空間",
    "设备上没有空间",
    "장치에 남은 공간이 없음",
)


def says(message: str, words: tuple[str, ...]) -> bool:
    """Whether ``message`` holds any of ``words`` (one message, in its various languages)."""
    return any(w in message for w in words)
