-- AlterTable
ALTER TABLE "SourceSet" ADD COLUMN     "similarityMatrixEnabled" BOOLEAN NOT NULL DEFAULT false;
