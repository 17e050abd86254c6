-- AlterTable
ALTER TABLE "NlaSource" ALTER COLUMN "name" DROP DEFAULT;
