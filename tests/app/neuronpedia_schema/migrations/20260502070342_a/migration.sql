-- AlterTable
ALTER TABLE "NlaExplainShare" ADD COLUMN     "featured" BOOLEAN NOT NULL DEFAULT false;
